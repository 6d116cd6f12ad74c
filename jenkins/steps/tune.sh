#!/usr/bin/env bash
# tune.sh: the Tune stage (classic job 4). mlci tunes the model's hyperparameters until
# the experiment's goal is met or its budget is spent.
#
# Environment:
#   MLCI_DATA        dataset folder on the mlci host (required)
#   MLCI_EXPERIMENT  experiment spec path inside the repository (required), e.g.
#                    experiment.yaml; its objective.goal is the goal (the step API has
#                    no goal parameter for tune, so MLCI_GOAL is not read here)
#   MLCI_REPOSITORY, MLCI_COMMIT  default: from mlci-scm-sync.json (the SCM stage)
#   and those of lib.sh: MLCI_URL, MLCI_TOKEN, MLCI_OUT_DIR, BUILD_TAG, ...
#
# Writes mlci-tune.json and mlci-artifacts/tune/ (report.html, report.css, junit.xml,
# trials.csv, the best model). Exit: 0 goal met, 3 budget spent below the goal
# (UNSTABLE), 1 failure. A Jenkins abort cancels the run (it checkpoints first).
set -euo pipefail
MLCI_STEP=tune
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mlci_init
mlci_model_params
mlci_require_env MLCI_DATA "the dataset folder on the mlci host"
mlci_require_env MLCI_EXPERIMENT "the experiment spec's path inside the repository, e.g. experiment.yaml"

mlci_run_step tune "$(jq -n \
	--arg repository "$MLCI_REPOSITORY" \
	--arg commit "$MLCI_COMMIT" \
	--arg data "$MLCI_DATA" \
	--arg experiment "$MLCI_EXPERIMENT" \
	'{repository: $repository, commit: $commit, data: $data, experiment: $experiment}')"
