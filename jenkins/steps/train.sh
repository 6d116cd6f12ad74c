#!/usr/bin/env bash
# train.sh: the Train stage (classic job 3). mlci trains the model once and reports its
# best validation accuracy against the goal.
#
# Environment:
#   MLCI_DATA        dataset folder on the mlci host (required)
#   MLCI_SPEC        model spec path inside the repository (default: the file mlci detects)
#   MLCI_GOAL        validation accuracy to reach, a number such as 0.8 (default: mlci's, 0.8)
#   MLCI_REPOSITORY, MLCI_COMMIT  default: from mlci-scm-sync.json (the SCM stage)
#   and those of lib.sh: MLCI_URL, MLCI_TOKEN, MLCI_OUT_DIR, BUILD_TAG, ...
#
# Writes mlci-train.json and mlci-artifacts/train/ (model.safetensors, model.json,
# metrics.json). Exit: 0 goal met, 3 trained but below the goal, 1 failure.
set -euo pipefail
MLCI_STEP=train
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mlci_init
mlci_model_params
mlci_require_env MLCI_DATA "the dataset folder on the mlci host"
if [[ -n "${MLCI_GOAL:-}" && ! "$MLCI_GOAL" =~ ^(0?\.[0-9]+|0|1|1\.0+)$ ]]; then
	mlci_die "MLCI_GOAL must be a number between 0 and 1 such as 0.8 (got '$MLCI_GOAL')"
fi

mlci_run_step train "$(jq -n \
	--arg repository "$MLCI_REPOSITORY" \
	--arg commit "$MLCI_COMMIT" \
	--arg data "$MLCI_DATA" \
	--arg spec "${MLCI_SPEC:-}" \
	--arg goal "${MLCI_GOAL:-}" \
	'{repository: $repository, commit: $commit, data: $data}
	 + (if $spec == "" then {} else {spec: $spec} end)
	 + (if $goal == "" then {} else {goal: ($goal | tonumber)} end)')"
