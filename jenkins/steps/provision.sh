#!/usr/bin/env bash
# provision.sh: the Provision stage (classic job 2). mlci detects the model's kind and
# names the image for it, which must be on the mlci host's Docker Engine (nothing is
# pulled; the mlci trainer image is built from the mlci binary).
#
# Environment:
#   MLCI_DATA         dataset folder on the mlci host (required)
#   MLCI_REPOSITORY, MLCI_COMMIT  default: from mlci-scm-sync.json (the SCM stage)
#   and those of lib.sh: MLCI_URL, MLCI_TOKEN, MLCI_OUT_DIR, BUILD_TAG, ...
#
# Writes mlci-provision.json (result.kind, file, image, image_digest, command).
# Exit: 0 success, 1 failure.
set -euo pipefail
MLCI_STEP=provision
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mlci_init
mlci_model_params
mlci_require_env MLCI_DATA "the dataset folder on the mlci host"

mlci_run_step provision "$(jq -n \
	--arg repository "$MLCI_REPOSITORY" \
	--arg commit "$MLCI_COMMIT" \
	--arg data "$MLCI_DATA" \
	'{repository: $repository, commit: $commit, data: $data}')"
