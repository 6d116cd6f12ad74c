#!/usr/bin/env bash
# notify.sh: mail the result of a tuning run to the team (mlci's [mail] settings: SMTP, or
# the outbox when none are configured).
#
# Environment:
#   MLCI_RUN   id of the tune run to report (default: .id of mlci-tune.json, written by
#              tune.sh in the same workspace)
#   and those of lib.sh: MLCI_URL, MLCI_TOKEN, MLCI_OUT_DIR, BUILD_TAG, ...
#
# Writes mlci-notify.json (result.delivery: smtp or outbox, result.to).
# Exit: 0 sent, 1 failure.
set -euo pipefail
MLCI_STEP=notify
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mlci_init
if [[ -z "${MLCI_RUN:-}" && -f "$MLCI_OUT_DIR/mlci-tune.json" ]]; then
	MLCI_RUN="$(jq -r '.id // empty' "$MLCI_OUT_DIR/mlci-tune.json")"
fi
mlci_require_env MLCI_RUN "the tune run to report (or run jenkins/steps/tune.sh first, which writes mlci-tune.json)"

mlci_run_step notify "$(jq -n --arg run "$MLCI_RUN" '{run: $run}')"
