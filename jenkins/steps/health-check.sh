#!/usr/bin/env bash
# health-check.sh: classic job 5, every minute. mlci reconciles the training environments:
# relaunches dead containers and reports those it could not heal (crash loops).
#
# Environment: only those of lib.sh: MLCI_URL, MLCI_TOKEN, MLCI_OUT_DIR, BUILD_TAG, ...
# (BUILD_TAG differs per build, so every build is a new check).
#
# Writes mlci-health-check.json (result.checked, unhealed, findings).
# Exit: 0 all healthy or healed, 1 something is not healed (or the check failed).
set -euo pipefail
MLCI_STEP="health-check"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mlci_init

mlci_run_step health-check '{}'
