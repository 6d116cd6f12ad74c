//! One trial container as a one-replica Swarm service.

use bollard::models::{
    Limit, Mount as ServiceMount, MountTmpfsOptions, MountType, NetworkAttachmentConfig, ResourceObject,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecPrivileges, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use super::{Placement, ISOLATED_NETWORK};
use crate::ContainerSpec;

/// Keep `[a-zA-Z0-9-]` of `s` for a service name.
fn name_part(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect::<String>()
        .trim_matches('-')
        .to_owned()
}

/// The service for one trial container (see the module docs for what maps where).
pub(crate) fn service_spec(spec: &ContainerSpec, placement: &Placement, max_cpus: f64) -> ServiceSpec {
    let labels = spec.labels.to_map();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // Unique (a retry or a resume of the same trial may overlap the old one's removal).
    let name = format!(
        "mlci-{}-t{}-{:x}{:x}",
        name_part(&spec.labels.experiment, 24),
        name_part(&spec.labels.trial, 8),
        std::process::id(),
        nanos
    );
    let mut mounts: Vec<ServiceMount> = spec
        .mounts
        .iter()
        .map(|m| ServiceMount {
            target: Some(m.target.clone()),
            source: Some(m.source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    mounts.push(ServiceMount {
        target: Some("/tmp".into()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(64 << 20),
            ..Default::default()
        }),
        ..Default::default()
    });
    let nano_cpus = spec
        .cpus
        .map(|c| (c.clamp(0.01, max_cpus.max(0.01)) * 1e9).round() as i64);
    let memory = spec.memory_bytes.map(|b| b.min(i64::MAX as u64) as i64);
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels.clone()),
        // `Command` replaces the image's entrypoint (the CLI's `--entrypoint`).
        command: Some(spec.command.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: Some(spec.user.clone()),
        read_only: Some(true),
        mounts: Some(mounts),
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        capability_drop: Some(vec!["ALL".into()]),
        // A stop (pruned trial, timeout) kills at once, like `docker kill`.
        stop_signal: Some("SIGKILL".into()),
        stop_grace_period: Some(0),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus,
                memory_bytes: memory,
                pids: Some(4096),
            }),
            reservations: Some(ResourceObject {
                nano_cpus,
                memory_bytes: memory,
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            max_attempts: Some(0),
            ..Default::default()
        }),
        placement: Some(TaskSpecPlacement {
            constraints: Some(placement.constraints.clone()),
            ..Default::default()
        }),
        networks: (!spec.network).then(|| {
            vec![NetworkAttachmentConfig {
                target: Some(ISOLATED_NETWORK.into()),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(name),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mount, TrialLabels};

    #[test]
    fn a_trial_container_becomes_a_one_replica_service() {
        let mut spec = ContainerSpec::new("mlci-trainer:x", vec!["/mlci".into(), "train".into()]);
        spec.labels = TrialLabels {
            experiment: "exp one".into(),
            trial: "3".into(),
            kind: "cnn/mlci".into(),
            owner: "me".into(),
            ..TrialLabels::default()
        };
        spec.mounts = vec![Mount::rw("/w", "/work"), Mount::ro("/d", "/data")];
        spec.cpus = Some(8.0);
        spec.memory_bytes = Some(1 << 30);
        spec.user = "1000:1000".into();
        let placement = Placement {
            constraints: vec!["node.labels.mlci == trainer".into()],
            ..Placement::default()
        };
        let s = service_spec(&spec, &placement, 4.0);
        assert!(
            s.name.as_deref().unwrap().starts_with("mlci-exp-one-t3-"),
            "{:?}",
            s.name
        );
        assert_eq!(s.labels.as_ref().unwrap()["mlci.owner"], "me");
        assert_eq!(s.mode.unwrap().replicated.unwrap().replicas, Some(1));
        let task = s.task_template.unwrap();
        assert_eq!(
            task.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        let resources = task.resources.unwrap();
        // CPUs capped at the largest node.
        assert_eq!(resources.reservations.unwrap().nano_cpus, Some(4_000_000_000));
        assert_eq!(resources.limits.unwrap().memory_bytes, Some(1 << 30));
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            ["node.labels.mlci == trainer"]
        );
        assert_eq!(
            task.networks.unwrap()[0].target.as_deref(),
            Some(ISOLATED_NETWORK)
        );
        let c = task.container_spec.unwrap();
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.labels.unwrap()["mlci.trial"], "3");
        let mounts = c.mounts.unwrap();
        assert_eq!(
            mounts
                .iter()
                .map(|m| (m.target.clone().unwrap(), m.read_only))
                .collect::<Vec<_>>(),
            [
                ("/work".to_owned(), Some(false)),
                ("/data".to_owned(), Some(true)),
                ("/tmp".to_owned(), None)
            ]
        );
    }
}
