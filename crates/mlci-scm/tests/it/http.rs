//! End to end over HTTP: `git http-backend` behind a small Python server that demands basic
//! authentication, so the token really travels through libgit2's credential callback.
//! Fails where `python3` or `git` is missing (unless opted out: `MLCI_SKIP=python,git`).

#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use mlci_scm::{Credentials, RepoSpec, ScmError, SecretRef};

use crate::support::{read, scm, secrets, Upstream};

const SERVER: &str = r#"
import base64, http.server, os, subprocess, sys
root, user, token = sys.argv[1], sys.argv[2], sys.argv[3]
expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.git()

    def do_POST(self):
        self.git()

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def git(self):
        body = self.body()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1", REMOTE_USER=user,
                   REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), CONTENT_LENGTH=str(len(body)))
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

const TOKEN: &str = "tok-3x4mpl3-s3cr3t";

/// The server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(upstream: &Upstream, user: &str) -> Option<Server> {
    let script = upstream.dir.path().join(".git/server.py");
    std::fs::write(&script, SERVER).unwrap();
    let spawned = Command::new("python3")
        .arg(&script)
        .arg(upstream.dir.path())
        .args([user, TOKEN])
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            mlci_containers::testing::missing("python", "python3", e, "apt-get install -y python3");
            return None;
        }
    };
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("server said {line:?}"));
    Some(Server { child, port })
}

fn spec(server: &Server, credentials: Option<Credentials>) -> RepoSpec {
    let spec = RepoSpec::new("model", format!("http://127.0.0.1:{}/.git", server.port), "main");
    match credentials {
        Some(c) => spec.with_credentials(c),
        None => spec,
    }
}

fn token_in(var: &str, username: Option<&str>) -> Credentials {
    Credentials::Token {
        token: SecretRef::Env(var.into()),
        username: username.map(str::to_owned),
    }
}

#[test]
fn a_token_from_an_environment_variable_authenticates_over_http() {
    if Command::new("git").arg("--version").output().is_err() {
        mlci_containers::testing::missing(
            "git",
            "git",
            "its http-backend serves the test repository",
            "apt-get install -y git",
        );
        return;
    }
    let upstream = Upstream::new();
    let first = upstream.commit(&[("a.txt", Some("one"))], "first");
    let second = upstream.commit(&[("a.txt", Some("two"))], "second");
    let Some(server) = serve(&upstream, "x-access-token") else {
        return;
    };
    let (_root, scm) = scm();
    // The variables the specs reference, without touching the process environment.
    let scm = scm.with_secrets(secrets(|name| match name {
        "REPO_TOKEN" => Some(TOKEN.into()),
        "WRONG_TOKEN" => Some("wrong-token".into()),
        _ => None,
    }));

    // No credentials: the server's 401 is an authentication error naming the URL.
    let anonymous = spec(&server, None);
    let error = scm.fetch(&anonymous).unwrap_err();
    assert!(matches!(error, ScmError::Auth { .. }), "{error:?}");
    assert!(error.to_string().contains(&anonymous.url), "{error}");

    // A wrong token is rejected once, not retried forever; the message holds no secret.
    let error = scm
        .fetch(&spec(&server, Some(token_in("WRONG_TOKEN", None))))
        .unwrap_err();
    assert!(matches!(error, ScmError::Auth { .. }), "{error:?}");
    assert!(!error.to_string().contains("wrong-token"), "{error}");

    // An unset variable is named.
    let error = scm
        .fetch(&spec(&server, Some(token_in("UNSET_TOKEN", None))))
        .unwrap_err();
    assert!(matches!(error, ScmError::Credentials { .. }), "{error:?}");
    assert!(error.to_string().contains("UNSET_TOKEN"), "{error}");

    // The right token, with the default user name GitHub expects.
    let good = spec(&server, Some(token_in("REPO_TOKEN", None)));
    assert_eq!(scm.fetch(&good).unwrap().head, second);
    let workspace = scm.checkout(&good, &first).unwrap();
    assert_eq!(read(&workspace.path.join("a.txt")), "one");
    let third = upstream.commit(&[("a.txt", Some("three"))], "third");
    let new = scm.poll(&good, Some(&second)).unwrap();
    assert_eq!(new.commits.len(), 1);
    assert_eq!(new.commits[0].sha, third);
}
