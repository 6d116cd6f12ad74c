#!/usr/bin/env bash
# End-to-end test of jenkins/steps/*.sh against a running `mlci serve`: the stages of the
# Jenkinsfile in order, as Jenkins would run them, then the failure paths.
#
# Usage:
#   MLCI_URL=http://127.0.0.1:7878 MLCI_TOKEN=... \
#   MLCI_E2E_REPO_URL=/path/or/url/of/a/model/repo MLCI_DATA=/path/to/dataset \
#   tests/jenkins/steps_e2e.sh
#
# Environment:
#   MLCI_URL           the server (default http://127.0.0.1:7878)
#   MLCI_TOKEN         its token (required)
#   MLCI_E2E_REPO_URL  a model repository the server can clone (required); the step
#                      scripts of this checkout are run, the repository needs no copy
#   MLCI_E2E_BRANCH    its branch (default main)
#   MLCI_DATA          dataset folder on the server's host (required)
#   MLCI_EXPERIMENT    experiment spec path in the repository (default experiment.yaml);
#                      keep its budget small, the test waits for the whole tuning run
#   MLCI_E2E_XSD       JUnit schema to validate junit.xml with xmllint (default
#                      ../shared/fixtures/jenkins/junit-10.xsd beside the checkout; the
#                      check is skipped with a note when the file or xmllint is absent)
# Exit 0 when every check passed; the last line is "e2e: N passed, N failed".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
steps="$root/jenkins/steps"

: "${MLCI_URL:=http://127.0.0.1:7878}"
: "${MLCI_TOKEN:?MLCI_TOKEN is required: the token of the running mlci serve}"
: "${MLCI_E2E_REPO_URL:?MLCI_E2E_REPO_URL is required: a model repository the server can clone}"
: "${MLCI_DATA:?MLCI_DATA is required: the dataset folder on the server host}"
: "${MLCI_EXPERIMENT:=experiment.yaml}"
: "${MLCI_E2E_XSD:=$root/../shared/fixtures/jenkins/junit-10.xsd}"
export MLCI_URL MLCI_TOKEN MLCI_DATA MLCI_EXPERIMENT

for tool in curl jq; do
	command -v "$tool" >/dev/null || {
		echo "MISSING TOOL: $tool (apt-get install $tool)" >&2
		exit 1
	}
done
curl -fsS --connect-timeout 5 -o /dev/null "$MLCI_URL/healthz" || {
	echo "e2e: no mlci server answers at $MLCI_URL/healthz; start 'mlci serve' first" >&2
	exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/mlci-steps-e2e.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT
cd "$work"
BUILD_TAG="mlci-e2e-$(date +%s)-$$"
export MLCI_OUT_DIR="$work" BUILD_TAG

passed=0
failed=0
ok() {
	passed=$((passed + 1))
	echo "ok   $*"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL $*"
}
# expect CODES NAME SCRIPT [ENV=VALUE...]: run a step script with the extra environment,
# its output in NAME.out, and check that it exits with one of CODES (e.g. "0 3").
expect() {
	local codes=$1 name=$2 script=$3 rc=0
	shift 3
	env "$@" "$steps/$script" >"$name.out" 2>&1 || rc=$?
	if [[ " $codes " == *" $rc "* ]]; then
		ok "$name: exit $rc"
	else
		fail "$name: exit $rc, expected one of: $codes"
		sed 's/^/     | /' "$name.out"
	fi
	return 0
}
# json_ok NAME FILE FILTER: the jq FILTER is true on FILE.
json_ok() {
	if jq -e "$3" "$2" >/dev/null 2>&1; then ok "$1"; else fail "$1 ($2: $3)"; fi
}

# --- the pipeline, stage by stage -------------------------------------------------------

expect 0 scm-sync scm-sync.sh MLCI_REPO_URL="$MLCI_E2E_REPO_URL" MLCI_BRANCH="${MLCI_E2E_BRANCH:-main}"
json_ok "scm-sync result has a full commit sha" mlci-scm-sync.json '.result.commit | test("^[0-9a-f]{40}$")'
json_ok "scm-sync outcome success" mlci-scm-sync.json '.outcome == "success" and .state == "succeeded"'

expect 0 provision provision.sh
json_ok "provision result has an image" mlci-provision.json '.result.image | type == "string"'

expect "0 3" train train.sh MLCI_GOAL=0.5
for f in model.safetensors model.json metrics.json; do
	if [[ -s "mlci-artifacts/train/$f" ]]; then ok "train artifact $f"; else fail "train artifact $f missing"; fi
done
json_ok "train outcome matches result.met" mlci-train.json \
	'(.result.met and .outcome == "success") or ((.result.met | not) and .outcome == "unstable")'

# The Jenkinsfile's Tune stage runs only when Train fell short of the goal, or with the
# FORCE_TUNE parameter (MLCI_FORCE_TUNE=true here).
if jq -e '.outcome == "success"' mlci-train.json >/dev/null && [[ "${MLCI_FORCE_TUNE:-false}" != true ]]; then
	ok "train reached the goal: Tune skipped, as the Jenkinsfile's when { } does"
else
	expect "0 3" tune tune.sh
	for f in report.html report.css junit.xml trials.csv; do
		if [[ -s "mlci-artifacts/tune/$f" ]]; then ok "tune artifact $f"; else fail "tune artifact $f missing"; fi
	done
	if [[ -f "$MLCI_E2E_XSD" ]] && command -v xmllint >/dev/null; then
		if xmllint --noout --schema "$MLCI_E2E_XSD" mlci-artifacts/tune/junit.xml >junit.out 2>&1; then
			ok "junit.xml validates against $(basename "$MLCI_E2E_XSD")"
		else
			fail "junit.xml does not validate against $MLCI_E2E_XSD"
			sed 's/^/     | /' junit.out
		fi
	else
		echo "note: junit.xml schema check skipped (no $MLCI_E2E_XSD or no xmllint)"
	fi
	if head -n 1 mlci-artifacts/tune/trials.csv 2>/dev/null | grep -q '^best,goal,'; then
		ok "trials.csv has the Plot header"
	else
		fail "trials.csv header is not best,goal,..."
	fi

	# The same BUILD_TAG again (a resumed or replayed Jenkins stage) follows the same run.
	first_id="$(jq -r .id mlci-tune.json)"
	expect "0 3" tune-again tune.sh
	if [[ "$(jq -r .id mlci-tune.json)" == "$first_id" ]]; then
		ok "same Idempotency-Key, same run ($first_id)"
	else
		fail "the same Idempotency-Key started a second run"
	fi
fi

expect 0 notify notify.sh
json_ok "notify delivery is smtp or outbox" mlci-notify.json '.result.delivery | IN("smtp", "outbox")'

expect "0 1" health-check health-check.sh
json_ok "health-check result counts" mlci-health-check.json '.result.checked | type == "number"'

# --- failure paths ----------------------------------------------------------------------

expect 1 wrong-token train.sh MLCI_TOKEN=not-the-token BUILD_TAG="$BUILD_TAG-wrong"
if grep -q 'HTTP 401' wrong-token.out; then ok "wrong token: HTTP 401 reported"; else fail "wrong token: no 'HTTP 401' in the output"; fi

expect 1 bad-input train.sh MLCI_DATA=/nonexistent/mlci-e2e BUILD_TAG="$BUILD_TAG-bad"

expect 1 unreachable train.sh MLCI_URL=http://127.0.0.1:9 MLCI_RETRIES=0
if grep -q 'cannot reach mlci at http://127.0.0.1:9' unreachable.out; then
	ok "unreachable server: the URL is named"
else
	fail "unreachable server: no 'cannot reach mlci at http://127.0.0.1:9'"
fi

# The token never shows: not in any output, not on any command line while a step runs.
(
	end=$((SECONDS + 20))
	while ((SECONDS < end)); do
		ps -eo args= >>ps.log 2>/dev/null || true
		sleep 0.1
	done
) &
sampler=$!
expect "0 3" train-ps train.sh BUILD_TAG="$BUILD_TAG-ps"
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
if grep -qF -- "$MLCI_TOKEN" ./*.out; then fail "the token appears in a step's output"; else ok "the token is in no output"; fi
if grep -qF -- "$MLCI_TOKEN" ps.log; then fail "the token appears on a command line (ps)"; else ok "the token is on no command line"; fi

echo
echo "e2e: $passed passed, $failed failed"
((failed == 0))
