#!/usr/bin/env bash
# provision.sh: the Provision stage (classic job 2). mlci picks the image for the model's
# kind and pulls or builds it; with MLCI_ENVIRONMENT=true it also starts a long-lived
# training environment that the health check (job 5) keeps alive.
#
# Environment:
#   MLCI_DATA         dataset folder on the mlci host (required)
#   MLCI_ENVIRONMENT  true: also start the environment; false or unset: image only
#   MLCI_REPOSITORY, MLCI_COMMIT  default: from mlci-scm-sync.json (the SCM stage)
#   and those of lib.sh: MLCI_URL, MLCI_TOKEN, MLCI_OUT_DIR, BUILD_TAG, ...
#
# Writes mlci-provision.json (result.kind, image, image_digest, environment).
# Exit: 0 success, 1 failure.
set -euo pipefail
MLCI_STEP=provision
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mlci_init
mlci_model_params
mlci_require_env MLCI_DATA "the dataset folder on the mlci host"
case "${MLCI_ENVIRONMENT:-}" in
"" | true | false) ;;
*) mlci_die "MLCI_ENVIRONMENT must be true or false (got '$MLCI_ENVIRONMENT')" ;;
esac

mlci_run_step provision "$(jq -n \
	--arg repository "$MLCI_REPOSITORY" \
	--arg commit "$MLCI_COMMIT" \
	--arg data "$MLCI_DATA" \
	--arg environment "${MLCI_ENVIRONMENT:-}" \
	'{repository: $repository, commit: $commit, data: $data}
	 + (if $environment == "" then {} else {environment: ($environment == "true")} end)')"
