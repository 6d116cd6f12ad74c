//! `health-check`: one reconcile of the registered environments (what the every-minute
//! Jenkins job runs); `failure` when one could not be healed.

use mlci_core::Outcome;
use mlci_server::{RunContext, StepFailure, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::steps::{fail, MlciSteps};

/// The parameters of `health-check`: none.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckParams {}

/// One environment's finding.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct Finding {
    pub(crate) environment: String,
    pub(crate) observed: String,
    pub(crate) unhealed: bool,
    pub(crate) text: String,
}

/// What `health-check` gives back.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct HealthCheckResult {
    /// environments checked
    pub(crate) checked: usize,
    /// environments not healed
    pub(crate) unhealed: usize,
    /// one per environment: `environment`, `observed`, `unhealed`, `text`
    pub(crate) findings: Vec<Finding>,
}

impl MlciSteps {
    pub(crate) fn health_check(&self, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let health =
            crate::env::health_with(&self.cfg, self.store.clone()).map_err(|e| fail(format!("{e:#}")))?;
        let findings = health.reconcile().map_err(fail)?;
        let unhealed = findings.iter().filter(|f| f.unhealed()).count();
        for f in &findings {
            ctx.log(f.to_string());
        }
        ctx.log(format!(
            "{} environment(s) checked, {unhealed} not healed",
            findings.len()
        ));
        let result = HealthCheckResult {
            checked: findings.len(),
            unhealed,
            findings: findings
                .iter()
                .map(|f| Finding {
                    environment: f.environment.clone(),
                    observed: f.observed.to_string(),
                    unhealed: f.unhealed(),
                    text: f.to_string(),
                })
                .collect(),
        };
        let outcome = if unhealed > 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        Ok(StepOutput::new(&result, outcome))
    }
}
