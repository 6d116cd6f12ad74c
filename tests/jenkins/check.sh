#!/usr/bin/env bash
# Static checks of the Jenkins side of mlci, with the real tools (no Jenkins needed):
#   - Jenkins Job Builder renders every job of jenkins/jobs without an error or a warning,
#     one well-formed config.xml per job;
#   - Groovy parses every Jenkinsfile (compilation to the CONVERSION phase: a syntax error
#     fails, nothing is run);
#   - the Jenkinsfiles have the stages and bindings the step scripts rely on;
#   - shellcheck -x and bash -n pass on every script, and the step scripts are executable;
#   - jenkins/plugins.txt pins every plugin as id:version;
#   - jenkins/casc/jenkins.yaml is YAML and holds no literal secret.
#
# Usage: tests/jenkins/check.sh        (from anywhere; exit 0 when all pass)
# Tools: jenkins-jobs (pip install jenkins-job-builder), groovy + a JRE (apt-get install
# groovy default-jre-headless), shellcheck, python3 with PyYAML (comes with
# jenkins-job-builder). A missing tool is an error, never a skipped check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)"); }
need jenkins-jobs "pip install jenkins-job-builder"
need groovy "apt-get install groovy default-jre-headless"
need java "apt-get install default-jre-headless"
need shellcheck "apt-get install shellcheck"
need python3 "apt-get install python3"
need bash "apt-get install bash"
if ((${#missing[@]})); then
	printf 'MISSING TOOL: %s\n' "${missing[@]}" >&2
	exit 1
fi
python3 -c 'import yaml' 2>/dev/null || {
	echo "MISSING TOOL: python3 module yaml (pip install jenkins-job-builder, or apt-get install python3-yaml)" >&2
	exit 1
}
# Debian's groovy launcher looks for /usr/lib/jvm/default-java unless JAVA_HOME is set.
if [[ -z "${JAVA_HOME:-}" && ! -x /usr/lib/jvm/default-java/bin/java ]]; then
	JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
	export JAVA_HOME
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mlci-jenkins-check.XXXXXX")"
trap 'rm -rf -- "$tmp"' EXIT

passed=0
failed=0
failures=()
# check NAME COMMAND...: run it, keep its output, print it only when it fails.
check() {
	local name=$1
	shift
	if "$@" >"$tmp/out" 2>&1; then
		passed=$((passed + 1))
		printf 'ok   %s\n' "$name"
	else
		failed=$((failed + 1))
		failures+=("$name")
		printf 'FAIL %s\n' "$name"
		sed 's/^/     | /' "$tmp/out"
	fi
}

# --- Jenkins Job Builder --------------------------------------------------------------

jjb_render() {
	# An explicit config: without one JJB warns that /etc/jenkins_jobs/jenkins_jobs.ini is
	# missing. --config-xml writes OUT/<job>/config.xml (the layout JJB 3 makes default).
	printf '[job_builder]\nignore_cache=True\nallow_empty_variables=False\n' >"$tmp/jjb.ini"
	jenkins-jobs --conf "$tmp/jjb.ini" test --config-xml jenkins/jobs -o "$tmp/jobs" 2>"$tmp/jjb.log" || {
		cat "$tmp/jjb.log"
		return 1
	}
	if grep -E 'WARNING|ERROR|Traceback' "$tmp/jjb.log"; then
		echo "jenkins-jobs printed the warnings or errors above"
		return 1
	fi
}

jjb_every_job_rendered() {
	python3 - "$tmp/jobs" jenkins/jobs/*.yaml <<'EOF'
import pathlib, sys, xml.etree.ElementTree as ET
import yaml

out = pathlib.Path(sys.argv[1])
names = []
for path in sys.argv[2:]:
    for item in yaml.safe_load(open(path)) or []:
        if "job" in item:
            names.append(item["job"]["name"])
if not names:
    sys.exit("no jobs found in jenkins/jobs/*.yaml")
bad = 0
for name in names:
    xml = out / name / "config.xml"
    if not xml.is_file():
        print(f"{name}: no {xml.relative_to(out)} rendered")
        bad += 1
        continue
    root = ET.parse(xml).getroot()
    print(f"{name}: {root.tag}")
# The five classic jobs and the two pipelines.
want = {"mlci-scm-sync", "mlci-provision", "mlci-train", "mlci-tune", "mlci-health-check",
        "mlci-pipeline", "mlci-health"}
if not want <= set(names):
    print("missing jobs:", sorted(want - set(names)))
    bad += 1
sys.exit(1 if bad else 0)
EOF
}

check "jenkins-jobs test jenkins/jobs renders without warnings" jjb_render
check "every job in jenkins/jobs has a well-formed config.xml" jjb_every_job_rendered

# --- Jenkinsfiles ---------------------------------------------------------------------

mapfile -t jenkinsfiles < <(find . -path ./target -prune -o -path ./.git -prune -o \
	-type f \( -name Jenkinsfile -o -name '*.Jenkinsfile' \) -print | sort)

cat >"$tmp/parse.groovy" <<'EOF'
// Compile each file to the CONVERSION phase: the source is parsed into an AST (syntax
// errors fail here) and nothing is resolved or run. Declarative pipelines are Groovy.
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.Phases
import org.codehaus.groovy.control.CompilationFailedException

int bad = 0
for (String path : args) {
    def unit = new CompilationUnit()
    unit.addSource(new File(path))
    try {
        unit.compile(Phases.CONVERSION)
        println "${path}: parsed"
    } catch (CompilationFailedException e) {
        println "${path}: ${e.message}"
        bad++
    }
}
System.exit(bad ? 1 : 0)
EOF

groovy_parse() {
	((${#jenkinsfiles[@]} >= 2)) || {
		echo "expected Jenkinsfile and jenkins/health.Jenkinsfile, found: ${jenkinsfiles[*]:-none}"
		return 1
	}
	groovy "$tmp/parse.groovy" "${jenkinsfiles[@]}"
}
check "groovy parses ${#jenkinsfiles[@]} Jenkinsfiles" groovy_parse

# What the pipeline must contain for the step scripts and the admin README to hold.
jenkinsfile_contract() {
	local f=Jenkinsfile bad=0 want
	for want in "stage('SCM')" "stage('Provision')" "stage('Train')" "stage('Tune')" \
		"stage('Publish')" "checkout scm" "jenkins/steps/" "returnStatus: true" \
		"string(credentialsId: 'mlci-token', variable: 'MLCI_TOKEN')" "unstable(" \
		"junit " "publishHTML" "archiveArtifacts" "plot " "timestamps()" "timeout(" \
		"MLCI_URL" "failure {" "mail " "booleanParam(name: 'FORCE_TUNE'" \
		"expression { env.MLCI_TRAIN_EXIT != '0' || params.FORCE_TUNE }"; do
		grep -qF -- "$want" "$f" || {
			echo "$f: no $want"
			bad=1
		}
	done
	for want in "cron('* * * * *')" "jenkins/steps/health-check.sh" "mlci-token" "mail "; do
		grep -qF -- "$want" jenkins/health.Jenkinsfile || {
			echo "jenkins/health.Jenkinsfile: no $want"
			bad=1
		}
	done
	# Secrets only through withCredentials: no token in an environment block or a literal.
	if grep -nE "credentials\('mlci-token'\)|MLCI_TOKEN *=" "$f" jenkins/health.Jenkinsfile; then
		echo "bind MLCI_TOKEN with withCredentials only"
		bad=1
	fi
	return "$bad"
}
check "Jenkinsfiles have the stages, bindings and publishers" jenkinsfile_contract

# --- shell ----------------------------------------------------------------------------

scripts=(jenkins/steps/*.sh tests/jenkins/*.sh)
check "shellcheck -x ${#scripts[@]} scripts" shellcheck -x "${scripts[@]}"

# The step scripts run on the agents people have: Debian 11's curl is 7.74. No option curl
# added later (fail-with-body came in 7.76; the others listed even later).
steps_curl_7_74() {
	! grep -nE -- '--(fail-with-body|json|no-clobber|remove-on-error|url-query|variable|rate|expand-[a-z-]+|ca-native|ech)\b' jenkins/steps/*.sh
}
check "step scripts use no curl option newer than 7.74 (Debian 11)" steps_curl_7_74

bash_n() {
	local f bad=0
	for f in "${scripts[@]}"; do bash -n "$f" || bad=1; done
	return "$bad"
}
check "bash -n ${#scripts[@]} scripts" bash_n

steps_executable() {
	local f bad=0
	for f in jenkins/steps/*.sh; do
		[[ "$f" == */lib.sh ]] && continue
		[[ -x "$f" ]] || {
			echo "$f is not executable (Jenkins runs it directly): chmod +x $f"
			bad=1
		}
		head -n 1 "$f" | grep -qx '#!/usr/bin/env bash' || {
			echo "$f: first line must be #!/usr/bin/env bash"
			bad=1
		}
		grep -qx 'set -euo pipefail' "$f" || {
			echo "$f: no 'set -euo pipefail'"
			bad=1
		}
	done
	# The token must never be traced or printed.
	if grep -nE '^[^#]*(set -x|set -o xtrace|echo[^#]*MLCI_TOKEN)' jenkins/steps/*.sh; then
		echo "no xtrace and no echo of MLCI_TOKEN in the step scripts"
		bad=1
	fi
	return "$bad"
}
check "step scripts are executable bash with set -euo pipefail, no xtrace" steps_executable

# --- plugins and Configuration as Code ------------------------------------------------

plugins_pinned() {
	local bad=0 line n=0
	while IFS= read -r line; do
		line="${line%%#*}"
		line="${line//[[:space:]]/}"
		[[ -z "$line" ]] && continue
		n=$((n + 1))
		[[ "$line" =~ ^[A-Za-z0-9_.-]+:[A-Za-z0-9_.+-]+$ ]] || {
			echo "jenkins/plugins.txt: '$line' is not id:version"
			bad=1
		}
	done <jenkins/plugins.txt
	local id
	for id in workflow-aggregator git github junit htmlpublisher plot mailer email-ext \
		credentials-binding timestamper configuration-as-code parameterized-trigger build-timeout; do
		grep -qE "^$id:" jenkins/plugins.txt || {
			echo "jenkins/plugins.txt: $id is missing"
			bad=1
		}
	done
	echo "$n plugins"
	return "$bad"
}
check "jenkins/plugins.txt pins every plugin as id:version" plugins_pinned

casc_no_literal_secrets() {
	python3 - jenkins/casc/jenkins.yaml <<'EOF'
import re, sys
import yaml

doc = yaml.safe_load(open(sys.argv[1]))
bad = []
def walk(node, path):
    if isinstance(node, dict):
        for k, v in node.items():
            walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{path}[{i}]")
    elif re.search(r"(secret|password|token)$", path, re.I) and not re.fullmatch(r"\$\{[A-Z0-9_]+\}", str(node)):
        bad.append(f"{path} = {node!r} (use a ${{ENV_VAR}} reference)")
walk(doc, "")
ids = [c[k]["id"] for d in doc["credentials"]["system"]["domainCredentials"]
       for c in d["credentials"] for k in c]
for want in ("mlci-token", "github-webhook-secret"):
    if want not in ids:
        bad.append(f"credential {want} is missing")
for section in ("mailer", "email-ext", "gitHubPluginConfig"):
    if section not in doc.get("unclassified", {}):
        bad.append(f"unclassified.{section} is missing")
print("\n".join(bad) or f"credentials: {', '.join(ids)}")
sys.exit(1 if bad else 0)
EOF
}
check "jenkins/casc/jenkins.yaml has the credentials, mail, GitHub hook; no literal secret" casc_no_literal_secrets

# --- summary --------------------------------------------------------------------------

echo
if ((failed)); then
	printf 'failed: %s\n' "${failures[@]}"
fi
echo "jenkins: $passed passed, $failed failed"
((failed == 0))
