#!/usr/bin/env bash
# scm-sync.sh: the SCM stage (classic job 1). mlci fetches the model repository at exactly
# the commit Jenkins checked out and detects what kind of model it holds.
#
# Environment:
#   MLCI_REPO_URL    clone URL of the model repository, reachable from the mlci host
#                    (default: GIT_URL, which Jenkins' git plugin sets)
#   MLCI_REPOSITORY  the repository's name in mlci (default: the last part of MLCI_REPO_URL
#                    without .git)
#   MLCI_BRANCH      branch (default: BRANCH_NAME when Jenkins sets it, else main)
#   GIT_COMMIT       the commit Jenkins checked out (the git plugin sets it); mlci builds
#                    exactly that one. Unset: mlci takes the head of MLCI_BRANCH.
#   and those of lib.sh: MLCI_URL, MLCI_TOKEN, MLCI_OUT_DIR, BUILD_TAG, ...
#
# Writes mlci-scm-sync.json (params.repository, result.commit, result.workspace,
# result.kind), which the later steps read. Exit: 0 success, 1 failure.
set -euo pipefail
MLCI_STEP="scm-sync"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mlci_init

MLCI_REPO_URL="${MLCI_REPO_URL:-${GIT_URL:-}}"
mlci_require_env MLCI_REPO_URL "the model repository's clone URL (Jenkins' git plugin sets GIT_URL)"
if [[ -z "${MLCI_REPOSITORY:-}" ]]; then
	MLCI_REPOSITORY="${MLCI_REPO_URL%/}"
	MLCI_REPOSITORY="${MLCI_REPOSITORY##*[/:]}"
	MLCI_REPOSITORY="${MLCI_REPOSITORY%.git}"
fi
mlci_require_env MLCI_REPOSITORY "the repository's name in mlci"
MLCI_BRANCH="${MLCI_BRANCH:-${BRANCH_NAME:-main}}"
[[ -n "${GIT_COMMIT:-}" ]] || mlci_warn "GIT_COMMIT is not set: mlci builds the head of branch $MLCI_BRANCH"

mlci_run_step scm-sync "$(jq -n \
	--arg repository "$MLCI_REPOSITORY" \
	--arg url "$MLCI_REPO_URL" \
	--arg branch "$MLCI_BRANCH" \
	--arg commit "${GIT_COMMIT:-}" \
	'{repository: $repository, url: $url, branch: $branch}
	 + (if $commit == "" then {} else {commit: $commit} end)')"
