# shellcheck shell=bash
# lib.sh: what every mlci step script shares. Sourced, never run.
#
# A step script builds its JSON parameters, then calls `mlci_run_step STEP BODY`, which
#   1. POSTs /api/v1/steps/STEP with an Idempotency-Key (a retried or resumed Jenkins
#      stage gets the run it already started, not a second one),
#   2. streams the run's log to stdout (the Jenkins console) until the run finishes,
#   3. writes the finished run to $MLCI_OUT_DIR/mlci-STEP.json,
#   4. downloads its artifacts into $MLCI_OUT_DIR/mlci-artifacts/STEP/,
#   5. prints a one-line summary and exits with the run's outcome:
#      0 success, 3 unstable (ran, goal not met), 1 failure/aborted/anything else.
# See docs/step-api.md for the API.
#
# Environment read here (by every step):
#   MLCI_URL              base URL of `mlci serve` (default http://127.0.0.1:7878)
#   MLCI_TOKEN            API token, sent as "Authorization: Bearer"; in Jenkins bound by
#                         withCredentials from the secret text 'mlci-token'. It is handed
#                         to curl on stdin (`curl -K-`), so it is never on a command line
#                         (ps), in a file or in the output.
#   MLCI_OUT_DIR          where results go (default: the working directory)
#   BUILD_TAG             set by Jenkins; the Idempotency-Key is ${BUILD_TAG:-local}-STEP
#   MLCI_IDEMPOTENCY_KEY  use this key instead (e.g. to start a fresh run from a shell)
#   MLCI_CANCEL_ON_ABORT  1 (default): on SIGTERM/SIGINT (a Jenkins abort) cancel the run
#                         with DELETE before exiting 143; 0: leave it running
#   MLCI_CONNECT_TIMEOUT  seconds to wait for a connection (default 10)
#   MLCI_RETRIES          retries of a request on a refused connection or a 5xx (default 3;
#                         safe for POST thanks to the Idempotency-Key)
#   MLCI_POLL_SECONDS     poll interval if the log stream breaks early (default 5)
#
# JSON is built and read with jq (Debian: apt-get install jq), never by string pasting.
# Works with curl 7.74 (Debian 11) and later: HTTP errors are read from the status code
# (`-w '%{http_code}'`), not with the fail-with-body option of curl 7.76.

MLCI_URL="${MLCI_URL:-http://127.0.0.1:7878}"
MLCI_URL="${MLCI_URL%/}"
MLCI_OUT_DIR="${MLCI_OUT_DIR:-.}"
MLCI_CONNECT_TIMEOUT="${MLCI_CONNECT_TIMEOUT:-10}"
MLCI_RETRIES="${MLCI_RETRIES:-3}"
MLCI_POLL_SECONDS="${MLCI_POLL_SECONDS:-5}"
MLCI_CANCEL_ON_ABORT="${MLCI_CANCEL_ON_ABORT:-1}"

MLCI_STEP="${MLCI_STEP:-step}" # set by each script before sourcing
MLCI_RUN_ID=""                 # the run being followed, for the abort trap
MLCI_WAITING_PID=""            # the background command being waited for, for the abort trap
MLCI_HTTP_CODE=""              # status of the last mlci_api call

# --- messages -------------------------------------------------------------------------

mlci_info() { printf 'mlci %s: %s\n' "$MLCI_STEP" "$*"; }
mlci_warn() { printf 'mlci %s: warning: %s\n' "$MLCI_STEP" "$*" >&2; }
mlci_die() {
	printf 'mlci %s: error: %s\n' "$MLCI_STEP" "$*" >&2
	exit 1
}

# --- setup ----------------------------------------------------------------------------

mlci_require_tools() {
	local tool
	for tool in curl jq; do
		command -v "$tool" >/dev/null 2>&1 ||
			mlci_die "$tool not found on this agent (Debian: apt-get install $tool)"
	done
}

# mlci_require_env NAME WHAT: die naming NAME when it is empty.
mlci_require_env() {
	[[ -n "${!1:-}" ]] || mlci_die "$1 is not set: $2"
}

mlci_check_token() {
	if [[ -z "${MLCI_TOKEN:-}" ]]; then
		mlci_warn "MLCI_TOKEN is not set: requests go without a token (the server will answer 401 if it wants one)"
	elif [[ "$MLCI_TOKEN" == *[$'\r\n']* ]]; then
		mlci_die "MLCI_TOKEN contains a line break; check the 'mlci-token' credential"
	fi
}

MLCI_TMP=""
mlci_cleanup() {
	[[ -n "$MLCI_TMP" ]] && rm -rf -- "$MLCI_TMP"
	return 0
}

# A Jenkins abort sends SIGTERM: cancel the run (a tuning run checkpoints first) so it
# does not go on burning CPU for a build nobody waits for, then exit like a killed process.
# The signal may reach this script alone (kill PID, not its process group): bash runs a
# trap only once the foreground command ends, so every long wait (the log stream, the
# poll's sleep) runs in the background under `wait`, which a signal interrupts at once.
mlci_on_signal() {
	trap - TERM INT HUP
	if [[ -n "$MLCI_WAITING_PID" ]]; then
		kill "$MLCI_WAITING_PID" 2>/dev/null || true
	fi
	if [[ -n "$MLCI_RUN_ID" && "$MLCI_CANCEL_ON_ABORT" == 1 ]]; then
		mlci_warn "interrupted: cancelling run $MLCI_RUN_ID"
		mlci_curl -sS --fail --connect-timeout "$MLCI_CONNECT_TIMEOUT" --max-time 30 \
			-X DELETE -o /dev/null "$MLCI_URL/api/v1/runs/$MLCI_RUN_ID" ||
			mlci_warn "could not cancel run $MLCI_RUN_ID at $MLCI_URL; cancel it with DELETE /api/v1/runs/$MLCI_RUN_ID"
	fi
	exit 143
}

mlci_init() {
	mlci_require_tools
	mlci_check_token
	[[ "$MLCI_URL" == http://* || "$MLCI_URL" == https://* ]] ||
		mlci_die "MLCI_URL must start with http:// or https:// (got '$MLCI_URL')"
	mkdir -p -- "$MLCI_OUT_DIR" || mlci_die "cannot create MLCI_OUT_DIR '$MLCI_OUT_DIR'"
	MLCI_TMP="$(mktemp -d "${TMPDIR:-/tmp}/mlci-$MLCI_STEP.XXXXXX")"
	trap mlci_cleanup EXIT
	trap mlci_on_signal TERM INT HUP
}

# --- HTTP -----------------------------------------------------------------------------

# mlci_curl ARGS...: curl, with the token as a config read from stdin (`-K-`), so it
# never shows in `ps` or in a file. printf is a builtin: no process sees it either.
mlci_curl() {
	if [[ -n "${MLCI_TOKEN:-}" ]]; then
		local token="${MLCI_TOKEN//\\/\\\\}"
		token="${token//\"/\\\"}"
		printf 'header = "Authorization: Bearer %s"\n' "$token" |
			curl -K- --user-agent mlci-jenkins-steps "$@"
	else
		curl --user-agent mlci-jenkins-steps "$@"
	fi
}

# mlci_http_error METHOD URL CODE BODY_FILE: the server's JSON error, then exit 1.
mlci_http_error() {
	local method=$1 url=$2 code=$3 body=$4 detail hint=""
	detail="$(jq -c . "$body" 2>/dev/null || head -c 2000 "$body")"
	case "$code" in
	401) hint=" (check the 'mlci-token' credential / MLCI_TOKEN)" ;;
	404) hint=" (is MLCI_URL the mlci step API?)" ;;
	esac
	mlci_die "$method $url answered HTTP $code$hint: ${detail:-<empty body>}"
}

# mlci_api METHOD PATH OUT_FILE [BODY_FILE] [CURL_ARGS...]: one request; the answer goes to
# OUT_FILE and its status to MLCI_HTTP_CODE. Dies with the URL on a connection failure and
# with the server's JSON error on an HTTP error.
mlci_api() {
	local method=$1 url="$MLCI_URL$2" out=$3 body=${4:-} rc=0
	shift $(($# < 4 ? $# : 4))
	# No --fail: the error's JSON body is kept in OUT_FILE, and the status decides. --retry
	# still retries 408, 429 and 5xx answers, and refused connections.
	local args=(-sS --connect-timeout "$MLCI_CONNECT_TIMEOUT"
		--retry "$MLCI_RETRIES" --retry-connrefused
		-X "$method" -o "$out" -w '%{http_code}')
	if [[ -n "$body" ]]; then
		args+=(-H 'Content-Type: application/json' --data-binary "@$body")
	fi
	MLCI_HTTP_CODE="$(mlci_curl "${args[@]}" "$@" "$url")" || rc=$?
	((rc == 0)) ||
		mlci_die "cannot reach mlci at $url (curl exit $rc); is 'mlci serve' running there and MLCI_URL right?"
	[[ "$MLCI_HTTP_CODE" =~ ^[1-5][0-9][0-9]$ ]] ||
		mlci_die "$method $url: no HTTP status in the answer (got '$MLCI_HTTP_CODE')"
	((MLCI_HTTP_CODE < 400)) || mlci_http_error "$method" "$url" "$MLCI_HTTP_CODE" "$out"
}

# --- runs -----------------------------------------------------------------------------

# mlci_start STEP BODY_FILE: POST the step; sets MLCI_RUN_ID.
mlci_start() {
	local step=$1 body=$2 key="${MLCI_IDEMPOTENCY_KEY:-${BUILD_TAG:-local}-$1}"
	mlci_api POST "/api/v1/steps/$step" "$MLCI_TMP/started.json" "$body" -H "Idempotency-Key: $key"
	MLCI_RUN_ID="$(jq -er '.id | strings' "$MLCI_TMP/started.json")" ||
		mlci_die "POST $MLCI_URL/api/v1/steps/$step answered without a run id: $(head -c 500 "$MLCI_TMP/started.json")"
	[[ "$MLCI_RUN_ID" =~ ^[A-Za-z0-9._-]+$ ]] || mlci_die "unexpected run id from $MLCI_URL: '$MLCI_RUN_ID'"
	if [[ "$MLCI_HTTP_CODE" == 200 ]]; then
		mlci_info "run $MLCI_RUN_ID already exists for Idempotency-Key $key: following it"
	else
		mlci_info "started run $MLCI_RUN_ID ($MLCI_URL/api/v1/runs/$MLCI_RUN_ID)"
	fi
}

mlci_finished() { # mlci_finished RUN_FILE
	jq -e '.state | IN("succeeded", "failed", "cancelled", "interrupted")' "$1" >/dev/null
}

# mlci_wait_for COMMAND...: run COMMAND in the background and wait for it (see
# mlci_on_signal); returns its status.
mlci_wait_for() {
	local rc=0
	"$@" &
	MLCI_WAITING_PID=$!
	wait "$MLCI_WAITING_PID" || rc=$?
	MLCI_WAITING_PID=""
	return "$rc"
}

# mlci_stream URL FILE: the chunked log at URL on stdout, with a copy in FILE.
mlci_stream() {
	mlci_curl -sS -N --fail --connect-timeout "$MLCI_CONNECT_TIMEOUT" "$1" | tee "$2"
	return "${PIPESTATUS[0]}"
}

# mlci_follow: the run's log on stdout until the run has finished; leaves the finished run
# in $MLCI_TMP/run.json. The chunked stream (`?follow=1`) normally covers it all; if it
# breaks (a proxy timeout, a service restart), polling `?offset=N` goes on from the last
# byte shown, so nothing is printed twice or lost.
MLCI_LOG_SHOWN=0
mlci_follow() {
	local log_url="$MLCI_URL/api/v1/runs/$MLCI_RUN_ID/log" rc=0
	# tee shows the stream on our stdout and keeps a copy, whose size is the offset to go on
	# from. (Not `tee /dev/fd/N`: in Jenkins stdout is a file, which that would reopen and
	# truncate.)
	mlci_wait_for mlci_stream "$log_url?follow=1" "$MLCI_TMP/log.stream" || rc=$?
	MLCI_LOG_SHOWN="$(wc -c <"$MLCI_TMP/log.stream")"
	MLCI_LOG_SHOWN="${MLCI_LOG_SHOWN//[!0-9]/}"
	((rc == 0)) || mlci_warn "log stream $log_url?follow=1 broke (curl exit $rc); polling every ${MLCI_POLL_SECONDS}s"
	while :; do
		mlci_api GET "/api/v1/runs/$MLCI_RUN_ID" "$MLCI_TMP/run.json"
		if mlci_finished "$MLCI_TMP/run.json"; then
			((rc == 0)) || mlci_log_since
			return 0
		fi
		mlci_wait_for sleep "$MLCI_POLL_SECONDS"
		mlci_log_since
	done
}

# mlci_log_since: print the log from byte MLCI_LOG_SHOWN on and advance it (X-Log-Offset).
mlci_log_since() {
	local next
	mlci_api GET "/api/v1/runs/$MLCI_RUN_ID/log?offset=$MLCI_LOG_SHOWN" "$MLCI_TMP/log.txt" "" \
		-D "$MLCI_TMP/log.headers"
	cat -- "$MLCI_TMP/log.txt"
	next="$(tr -d '\r' <"$MLCI_TMP/log.headers" | sed -n 's/^[Xx]-[Ll]og-[Oo]ffset: *\([0-9][0-9]*\).*/\1/p' | tail -n 1)"
	MLCI_LOG_SHOWN="${next:-$((MLCI_LOG_SHOWN + $(wc -c <"$MLCI_TMP/log.txt")))}"
}

# mlci_valid_artifact_name NAME: a plain file name, nothing that could leave the folder.
mlci_valid_artifact_name() {
	[[ -n "$1" && "$1" != *"/"* && "$1" != *"\\"* && "$1" != *".."* && "$1" != "." &&
		"$1" != *[[:cntrl:]]* ]]
}

# mlci_download_artifacts STEP: every file of /artifacts into mlci-artifacts/STEP/ (emptied
# first, so a reused workspace never publishes a previous build's files).
mlci_download_artifacts() {
	local step=$1 dir="$MLCI_OUT_DIR/mlci-artifacts/$1" list="$MLCI_TMP/artifacts.json" name
	mlci_api GET "/api/v1/runs/$MLCI_RUN_ID/artifacts" "$list"
	jq -e 'type == "array" and all(.[]; (.name | type) == "string")' "$list" >/dev/null ||
		mlci_die "GET $MLCI_URL/api/v1/runs/$MLCI_RUN_ID/artifacts: expected [{\"name\": ...}], got $(head -c 500 "$list")"
	# Names are checked in jq first (a line break in a name would split it below).
	jq -e 'all(.[]; .name | test("[[:cntrl:]]") | not)' "$list" >/dev/null ||
		mlci_die "refusing artifacts of run $MLCI_RUN_ID: a name contains control characters: $(jq -c '[.[].name]' "$list")"
	rm -rf -- "$dir"
	mkdir -p -- "$dir"
	while IFS= read -r name; do
		mlci_valid_artifact_name "$name" ||
			mlci_die "refusing artifact name '$name' of run $MLCI_RUN_ID: it must be a plain file name (no '/', no '..')"
		mlci_api GET "/api/v1/runs/$MLCI_RUN_ID/artifacts/$(jq -rn --arg n "$name" '$n | @uri')" \
			"$dir/$name"
	done < <(jq -r '.[].name' "$list")
	mlci_info "artifacts: $(jq -r 'if length == 0 then "none" else map("\(.name) (\(.size // "?") bytes)") | join(", ") end' "$list") -> $dir/"
}

# mlci_run_step STEP BODY_JSON: the whole protocol (see the top of this file). Exits.
mlci_run_step() {
	local step=$1 out="$MLCI_OUT_DIR/mlci-$1.json" outcome
	printf '%s\n' "$2" >"$MLCI_TMP/body.json"
	mlci_info "POST $MLCI_URL/api/v1/steps/$step $(jq -c . "$MLCI_TMP/body.json")"
	mlci_start "$step" "$MLCI_TMP/body.json"
	mlci_follow
	cp -- "$MLCI_TMP/run.json" "$out"
	outcome="$(jq -r '.outcome // "none"' "$out")"
	if [[ "$outcome" == success || "$outcome" == unstable ]]; then
		mlci_download_artifacts "$step"
	else
		# A failed run's partial files help debugging but must not fail the step twice.
		(mlci_download_artifacts "$step") || mlci_warn "no artifacts downloaded for failed run $MLCI_RUN_ID"
	fi
	MLCI_RUN_ID="" # finished: nothing left to cancel
	jq -r '"mlci \(.step) \(.id): \(.outcome // "no outcome") (state \(.state))"
		+ (if (.result | type) == "object" and (.result | length) > 0
		   then ": " + ([.result | to_entries[] | select(.value | scalars) | "\(.key)=\(.value)"] | join(" "))
		   else "" end)
		+ (if .error then "; error: \(.error)" else "" end)' "$out"
	case "$outcome" in
	success) exit 0 ;;
	unstable) exit 3 ;;
	*) exit 1 ;;
	esac
}

# mlci_model_params: MLCI_REPOSITORY and MLCI_COMMIT for the steps after scm-sync, from the
# environment or else from mlci-scm-sync.json (what the SCM stage wrote).
mlci_model_params() {
	local scm="$MLCI_OUT_DIR/mlci-scm-sync.json"
	if [[ -z "${MLCI_REPOSITORY:-}" || -z "${MLCI_COMMIT:-}" ]]; then
		[[ -f "$scm" ]] ||
			mlci_die "MLCI_REPOSITORY/MLCI_COMMIT are not set and $scm does not exist: run jenkins/steps/scm-sync.sh first (or set both)"
		MLCI_REPOSITORY="${MLCI_REPOSITORY:-$(jq -r '.params.repository // empty' "$scm")}"
		MLCI_COMMIT="${MLCI_COMMIT:-$(jq -r '.result.commit // empty' "$scm")}"
	fi
	mlci_require_env MLCI_REPOSITORY "the repository name (from $scm: .params.repository)"
	mlci_require_env MLCI_COMMIT "the commit to build (from $scm: .result.commit)"
}
