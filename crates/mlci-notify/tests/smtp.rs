//! mlci-notify against a real SMTP server: aiosmtpd (`python3 -m pip install
//! aiosmtpd`), started per test on a free 127.0.0.1 port and killed by its PID
//! when the test ends. What the server stored (a maildir) is parsed back with
//! Python's `email` package. TLS certificates are made per test with the
//! `openssl` command. A missing aiosmtpd or openssl fails the test, saying
//! what to install.
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlci_core::{
    ExperimentRecord, ExperimentSpec, ExperimentState, Failure, FailureKind, ParamValue, Params, Provenance,
    TrialRecord, TrialState,
};
use mlci_notify::{
    Delivery, MailConfig, Notification, Notifier, NotifyError, ReportLink, Secret, SecretRef, SecretResolver,
    Security, SmtpConfig,
};
use serde_json::Value;
use tempfile::TempDir;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
const REPORT: &[u8] = b"<!DOCTYPE html><html><body><h1>catsdogs report</h1></body></html>\n";

// ---------------------------------------------------------------- harness

/// What the binary's resolver does: the process environment and files (the library
/// reads neither itself).
fn secrets() -> SecretResolver {
    Arc::new(|r: &SecretRef| -> Result<Secret, mlci_notify::SecretError> {
        r.resolve_with(&|name| std::env::var_os(name), &|path| std::fs::read(path))
    })
}

fn python() -> Command {
    Command::new("python3")
}

/// Panics (never skips) when aiosmtpd is missing, saying how to install it.
fn require_aiosmtpd() {
    let ok = python()
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "these tests need the aiosmtpd SMTP server for python3: run `python3 -m pip install aiosmtpd`"
    );
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install it (`apt-get install openssl`)"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=mlci test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

enum Kind<'a> {
    Plain,
    /// `--tlscert/--tlskey`: STARTTLS, required before MAIL.
    StartTls(&'a Certs),
    /// `--smtpscert/--smtpskey`: TLS from the first byte.
    Smtps(&'a Certs),
    /// tests/smtp_auth_server.py: STARTTLS and a login required.
    Auth {
        certs: &'a Certs,
        user: &'a str,
        password: &'a str,
        mechanism: Option<&'a str>,
    },
}

/// A running aiosmtpd, killed by its PID on drop.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: PathBuf,
    log: PathBuf,
}

impl SmtpServer {
    fn start(dir: &Path, kind: Kind) -> Self {
        require_aiosmtpd();
        let port = free_port();
        let maildir = dir.join("maildir");
        let log = dir.join("server.log");
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = python();
        match &kind {
            Kind::Plain | Kind::StartTls(_) | Kind::Smtps(_) => {
                cmd.args(["-m", "aiosmtpd", "-n", "-l", &listen]);
                if let Kind::StartTls(c) = &kind {
                    cmd.arg("--tlscert").arg(&c.cert).arg("--tlskey").arg(&c.key);
                }
                if let Kind::Smtps(c) = &kind {
                    cmd.arg("--smtpscert").arg(&c.cert).arg("--smtpskey").arg(&c.key);
                }
                cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(&maildir);
            }
            Kind::Auth {
                certs,
                user,
                password,
                mechanism,
            } => {
                cmd.arg(format!("{SCRIPTS}/smtp_auth_server.py"))
                    .args(["127.0.0.1", &port.to_string()])
                    .arg(&maildir)
                    .arg(&certs.cert)
                    .arg(&certs.key)
                    .arg(user)
                    .env("MLCI_TEST_SMTP_PASSWORD", password);
                if let Some(m) = mechanism {
                    cmd.args(["--mechanism", m]);
                }
            }
        }
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("cannot start python3");
        let mut server = Self {
            child,
            port,
            maildir,
            log,
        };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the SMTP server exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, self.port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP server did not listen on port {} within 30 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The one message the server stored, parsed.
    fn received(&self) -> Value {
        let new = self.maildir.join("new");
        let files: Vec<PathBuf> = std::fs::read_dir(&new)
            .unwrap_or_else(|e| {
                panic!(
                    "no maildir at {} ({e}); server log:\n{}",
                    new.display(),
                    self.log()
                )
            })
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(
            files.len(),
            1,
            "expected one message in {}: {files:?}",
            new.display()
        );
        parse_mail(&files[0])
    }

    fn received_count(&self) -> usize {
        std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parse with Python's email package (headers decoded, bodies and attachments split out).
fn parse_mail(path: &Path) -> Value {
    let out = python()
        .arg(format!("{SCRIPTS}/parse_mail.py"))
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot parse {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn header<'a>(mail: &'a Value, name: &str) -> Vec<&'a str> {
    mail["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

fn one_header<'a>(mail: &'a Value, name: &str) -> &'a str {
    let values = header(mail, name);
    assert_eq!(values.len(), 1, "header {name}: {values:?}");
    values[0]
}

/// Logs written while `f` runs on this thread, at every level.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buf = Arc::clone(&buf);
        move || Capture(Arc::clone(&buf))
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    (out, logs)
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- fixtures

/// An experiment whose name and parameters need HTML escaping: 3 trials, the
/// third met the goal, the second ran out of memory.
fn experiment(state: ExperimentState) -> (ExperimentRecord, Vec<TrialRecord>) {
    let spec = ExperimentSpec::from_yaml(
        r#"
name: "cats<b>&dogs"
objective: { metric: val_accuracy, goal: 0.8 }
search_space:
  lr: { type: float, min: 0.0001, max: 0.1, log: true }
  optimizer: { type: categorical, values: [adam, "<sgd>"] }
trial: { executor: subprocess, command: [./train.sh] }
"#,
    )
    .unwrap();
    let trial = |n: u32, lr: f64, opt: &str, state: TrialState, value: Option<f64>, seconds: f64| {
        let params = Params::from([
            ("lr".to_owned(), ParamValue::Float(lr)),
            ("optimizer".to_owned(), ParamValue::Text(opt.to_owned())),
        ]);
        let mut t = TrialRecord::new(n, params, Provenance::default());
        t.state = state;
        t.value = value;
        t.seconds = seconds;
        t.attempts = 1;
        t
    };
    let mut oom = trial(2, 0.05, "adam", TrialState::Failed, None, 3.5);
    oom.failure = Some(Failure::new(FailureKind::OutOfMemory, "killed at <4 GiB>"));
    let trials = vec![
        trial(1, 0.001, "adam", TrialState::Completed, Some(0.761), 81.25),
        oom,
        trial(3, 0.0003, "<sgd>", TrialState::Completed, Some(0.8125), 90.0),
    ];
    let exp = ExperimentRecord {
        id: "catsdogs-1a2b3c".into(),
        spec,
        state,
        created_at: 1_700_000_000.0,
        updated_at: 1_700_000_200.0,
        best_trial: (state == ExperimentState::Succeeded).then_some(3),
        message: Some("trial 3 met the goal".into()),
        wall_seconds: 200.0,
        evaluation: None,
    };
    (exp, trials)
}

/// The succeeded experiment's mail with `report.html` attached.
fn notification(dir: &Path) -> Notification {
    let report = dir.join("report.html");
    std::fs::write(&report, REPORT).unwrap();
    let (exp, trials) = experiment(ExperimentState::Succeeded);
    Notification::for_experiment(&exp, &trials, Some(ReportLink::Attach(report))).unwrap()
}

fn mail_config(smtp: Option<SmtpConfig>, outbox: PathBuf) -> MailConfig {
    MailConfig {
        smtp,
        from: "mlci CI <ci@example.com>".into(),
        to: vec!["a@example.com".into(), "Bea <b@example.com>".into()],
        outbox,
    }
}

fn smtp(port: u16, security: Security) -> SmtpConfig {
    SmtpConfig {
        port,
        timeout_seconds: 10,
        ..SmtpConfig::new("127.0.0.1", security)
    }
}

const SUBJECT: &str = "[mlci] cats<b>&dogs: goal met, val_accuracy 0.8125 (goal 0.80) after 3 trials";

/// Everything the received (or saved) message must hold.
fn check_message(mail: &Value, n: &Notification) {
    assert_eq!(mail["defects"], serde_json::json!([]), "MIME defects");
    assert_eq!(n.subject, SUBJECT);
    assert_eq!(one_header(mail, "Subject"), SUBJECT);
    assert_eq!(one_header(mail, "From"), "mlci CI <ci@example.com>");
    assert_eq!(one_header(mail, "To"), "a@example.com, Bea <b@example.com>");
    assert_eq!(one_header(mail, "Auto-Submitted"), "auto-generated");
    assert_eq!(one_header(mail, "MIME-Version"), "1.0");
    assert!(!one_header(mail, "Date").is_empty());
    assert_eq!(
        mail["structure"],
        serde_json::json!([
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "text/html"
        ])
    );

    let text = mail["text"].as_str().expect("a text/plain part");
    assert_eq!(text.replace("\r\n", "\n"), n.text);
    for needle in [
        "cats<b>&dogs: goal met, val_accuracy 0.8125 (goal 0.80) after 3 trials",
        "Best parameters (trial 3)",
        "lr         0.0003",
        "optimizer  <sgd>",
        "failed (out_of_memory)",
        "trial 2: out_of_memory: killed at <4 GiB>",
        "Report      attached (report.html)",
        "Trials      3 finished: 2 completed, 1 failed",
    ] {
        assert!(text.contains(needle), "text lacks {needle:?}:\n{text}");
    }
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Trials")
        .skip(1)
        .take(4)
        .collect();
    assert_eq!(
        table,
        [
            "    #  state                   val_accuracy  seconds  parameters",
            "    1  completed                     0.7610     81.2  lr=0.001, optimizer=adam",
            "    2  failed (out_of_memory)             -      3.5  lr=0.05, optimizer=adam",
            " *  3  completed                     0.8125     90.0  lr=0.0003, optimizer=<sgd>",
        ],
        "{text}"
    );

    let html = mail["html"].as_str().expect("a text/html body");
    assert_eq!(html.replace("\r\n", "\n"), n.html);
    assert!(html.contains("<title>cats&lt;b&gt;&amp;dogs: goal met"), "{html}");
    assert!(html.contains(
        "<td style=\"padding:2px 8px;border-bottom:1px solid #ddd;text-align:left\">&lt;sgd&gt;</td>"
    ));
    assert!(html.contains("killed at &lt;4 GiB&gt;"));
    assert!(!html.contains("<b>&") && !html.contains("<sgd>") && !html.contains("<4 GiB>"));
    for external in ["src=", "<link", "url(", "http://", "https://", "<script"] {
        assert!(
            !html.contains(external),
            "html uses an external resource ({external})"
        );
    }

    let attachments = mail["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    assert_eq!(attachments[0]["filename"], "report.html");
    assert_eq!(attachments[0]["content_type"], "text/html");
    let bytes: Vec<u8> = (0..attachments[0]["hex"].as_str().unwrap().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&attachments[0]["hex"].as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes, REPORT);
}

/// The envelope (what the server was told in MAIL FROM / RCPT TO) and the id.
fn check_envelope(mail: &Value, delivery: &Delivery) {
    assert_eq!(one_header(mail, "X-MailFrom"), "ci@example.com");
    assert_eq!(one_header(mail, "X-RcptTo"), "a@example.com, b@example.com");
    match delivery {
        Delivery::Smtp { message_id } => assert_eq!(one_header(mail, "Message-ID"), message_id),
        other => panic!("expected an SMTP delivery, got {other:?}"),
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn plain_smtp_delivers_sender_recipients_both_bodies_and_the_report() {
    let dir = TempDir::new().unwrap();
    let server = SmtpServer::start(dir.path(), Kind::Plain);
    let n = notification(dir.path());
    let notifier = Notifier::new(
        mail_config(Some(smtp(server.port, Security::None)), dir.path().join("outbox")),
        secrets(),
    )
    .unwrap();
    let (delivery, logs) = capture_logs(|| notifier.send(&n));
    let delivery = delivery.unwrap();
    let mail = server.received();
    check_envelope(&mail, &delivery);
    check_message(&mail, &n);
    assert!(logs.contains("notification sent"), "{logs}");
    assert!(
        !logs.contains("WARN"),
        "plain SMTP to localhost is not worth a warning: {logs}"
    );
    assert!(
        !dir.path().join("outbox").exists(),
        "SMTP delivery must not write the outbox"
    );
}

#[test]
fn starttls_with_a_self_signed_ca_trusted_through_ca_file() {
    let dir = TempDir::new().unwrap();
    let certs = make_certs(dir.path());
    let server = SmtpServer::start(dir.path(), Kind::StartTls(&certs));
    let n = notification(dir.path());
    let mut config = smtp(server.port, Security::StartTls);
    config.ca_file = Some(certs.ca.clone());
    let delivery = Notifier::new(mail_config(Some(config), dir.path().join("outbox")), secrets())
        .unwrap()
        .send(&n)
        .unwrap();
    let mail = server.received();
    check_envelope(&mail, &delivery);
    check_message(&mail, &n);
}

#[test]
fn starttls_to_a_server_whose_ca_is_not_trusted_is_a_tls_error_naming_it() {
    let dir = TempDir::new().unwrap();
    let certs = make_certs(dir.path());
    let server = SmtpServer::start(dir.path(), Kind::StartTls(&certs));
    let n = notification(dir.path());
    let notifier = Notifier::new(
        mail_config(Some(smtp(server.port, Security::StartTls)), dir.path().join("o")),
        secrets(),
    )
    .unwrap();
    let err = notifier.send(&n).unwrap_err();
    assert!(matches!(err, NotifyError::Tls { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", server.port)),
        "{message}"
    );
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert_eq!(server.received_count(), 0);
}

#[test]
fn implicit_tls_with_ca_file() {
    let dir = TempDir::new().unwrap();
    let certs = make_certs(dir.path());
    let server = SmtpServer::start(dir.path(), Kind::Smtps(&certs));
    let n = notification(dir.path());
    let mut config = smtp(server.port, Security::Tls);
    config.ca_file = Some(certs.ca.clone());
    let delivery = Notifier::new(mail_config(Some(config), dir.path().join("outbox")), secrets())
        .unwrap()
        .send(&n)
        .unwrap();
    let mail = server.received();
    check_envelope(&mail, &delivery);
    check_message(&mail, &n);
}

#[test]
fn ca_file_without_a_certificate_is_an_error_naming_it() {
    let dir = TempDir::new().unwrap();
    let bogus = dir.path().join("ca.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let mut config = smtp(free_port(), Security::StartTls);
    config.ca_file = Some(bogus.clone());
    let err = Notifier::new(mail_config(Some(config), dir.path().join("o")), secrets())
        .unwrap()
        .send(&notification(dir.path()))
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::CaFile { .. }) && err.is_bad_input(),
        "{err:?}"
    );
    assert!(err.to_string().contains(&bogus.display().to_string()), "{err}");
}

const PASSWORD: &str = "s3cr3t-Pa55w0rd!";

fn auth_config(port: u16, certs: &Certs, password: SecretRef) -> SmtpConfig {
    SmtpConfig {
        username: Some("mlci-bot".into()),
        password: Some(password),
        ca_file: Some(certs.ca.clone()),
        ..smtp(port, Security::StartTls)
    }
}

#[test]
fn login_with_plain_and_login_mechanisms_and_the_password_never_shows() {
    let dir = TempDir::new().unwrap();
    let certs = make_certs(dir.path());
    let password_file = dir.path().join("smtp-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    // A variable only this test sets (std's environment lock makes this safe).
    let var = format!("MLCI_NOTIFY_TEST_PASSWORD_{}", std::process::id());
    std::env::set_var(&var, PASSWORD);

    for (mechanism, secret) in [
        (None, SecretRef::File(password_file.clone())),
        (Some("LOGIN"), SecretRef::Env(var.clone())),
    ] {
        let server_dir = TempDir::new_in(dir.path()).unwrap();
        let server = SmtpServer::start(
            server_dir.path(),
            Kind::Auth {
                certs: &certs,
                user: "mlci-bot",
                password: PASSWORD,
                mechanism,
            },
        );
        let n = notification(dir.path());
        let config = mail_config(
            Some(auth_config(server.port, &certs, secret)),
            dir.path().join("o"),
        );
        let notifier = Notifier::new(config.clone(), secrets()).unwrap();
        let (delivery, logs) = capture_logs(|| notifier.send(&n));
        let delivery = delivery.unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
        let mail = server.received();
        check_envelope(&mail, &delivery);
        check_message(&mail, &n);

        let used = mechanism.unwrap_or("PLAIN");
        assert!(
            server.log().contains(&format!("AUTH {used} ok user=mlci-bot")),
            "{}",
            server.log()
        );
        assert!(
            logs.contains("notification sent") && logs.contains("mlci-bot"),
            "{logs}"
        );
        for shown in [
            logs,
            format!("{config:?}"),
            format!("{notifier:?}"),
            format!("{:?}", config.smtp),
        ] {
            assert!(!shown.contains(PASSWORD), "the password shows in: {shown}");
        }
        let secret = config.smtp.as_ref().unwrap().password.as_ref().unwrap();
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{:?}", secrets()(secret).unwrap()), "***");
    }
    std::env::remove_var(&var);
}

#[test]
fn a_wrong_password_or_none_is_an_auth_error_naming_the_server_not_the_password() {
    let dir = TempDir::new().unwrap();
    let certs = make_certs(dir.path());
    let server = SmtpServer::start(
        dir.path(),
        Kind::Auth {
            certs: &certs,
            user: "mlci-bot",
            password: PASSWORD,
            mechanism: None,
        },
    );
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password-42").unwrap();
    let n = notification(dir.path());
    let server_name = format!("127.0.0.1:{}", server.port);

    let config = mail_config(
        Some(auth_config(server.port, &certs, SecretRef::File(wrong))),
        dir.path().join("o"),
    );
    let (result, logs) = capture_logs(|| Notifier::new(config, secrets()).unwrap().send(&n));
    let err = result.unwrap_err();
    assert!(
        matches!(err, NotifyError::Auth { .. }),
        "{err:?}\n{}",
        server.log()
    );
    let message = err.to_string();
    assert!(
        message.contains(&server_name) && message.contains("mlci-bot"),
        "{message}"
    );
    for shown in [&message, &format!("{err:?}"), &logs] {
        assert!(
            !shown.contains("not-the-password-42") && !shown.contains(PASSWORD),
            "{shown}"
        );
    }

    // No login configured: the server's 530 is an auth error too.
    let mut anonymous = smtp(server.port, Security::StartTls);
    anonymous.ca_file = Some(certs.ca.clone());
    let err = Notifier::new(mail_config(Some(anonymous), dir.path().join("o")), secrets())
        .unwrap()
        .send(&n)
        .unwrap_err();
    assert!(matches!(err, NotifyError::Auth { user: None, .. }), "{err:?}");
    assert!(err.to_string().contains(&server_name), "{err}");
    assert_eq!(server.received_count(), 0);
}

#[test]
fn a_missing_password_variable_or_file_is_named_before_connecting() {
    let dir = TempDir::new().unwrap();
    let n = notification(dir.path());
    let missing_file = dir.path().join("no-such-password-file");
    for (secret, named) in [
        (
            SecretRef::Env("MLCI_NOTIFY_TEST_UNSET_VARIABLE".into()),
            "`MLCI_NOTIFY_TEST_UNSET_VARIABLE`".to_owned(),
        ),
        (
            SecretRef::File(missing_file.clone()),
            missing_file.display().to_string(),
        ),
    ] {
        let config = SmtpConfig {
            username: Some("mlci-bot".into()),
            password: Some(secret),
            // Nothing listens here: the secret must fail first.
            ..smtp(free_port(), Security::None)
        };
        let err = Notifier::new(mail_config(Some(config), dir.path().join("o")), secrets())
            .unwrap()
            .send(&n)
            .unwrap_err();
        assert!(
            matches!(err, NotifyError::Secret { .. }) && err.is_bad_input(),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("smtp.password: ") && message.contains(&named),
            "{message}"
        );
    }
}

#[test]
fn without_smtp_the_message_goes_to_the_outbox_as_a_parseable_eml() {
    let dir = TempDir::new().unwrap();
    let outbox = dir.path().join("data").join("outbox");
    let n = notification(dir.path());
    let notifier = Notifier::new(mail_config(None, outbox.clone()), secrets()).unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let first = notifier.send(&n).unwrap();
    let second = notifier.send(&n).unwrap();

    let (Delivery::Outbox(first), Delivery::Outbox(second)) = (first, second) else {
        panic!("expected outbox deliveries");
    };
    assert_ne!(first, second, "a second message must not replace the first");
    let mut names: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "no temporary files are left: {names:?}");
    for path in [&first, &second] {
        assert_eq!(path.parent().unwrap(), outbox);
        let name = path.file_name().unwrap().to_str().unwrap();
        let (millis, rest) = name.split_once('-').unwrap();
        assert!(millis.parse::<u128>().unwrap() >= before, "{name}");
        assert_eq!(rest, "catsdogs-1a2b3c.eml");

        // Headers by hand: CRLF lines, folded continuations, a blank line before the body.
        let mut raw = String::new();
        std::fs::File::open(path)
            .unwrap()
            .read_to_string(&mut raw)
            .unwrap();
        let (head, _body) = raw.split_once("\r\n\r\n").expect("headers end with a blank line");
        let mut names = Vec::new();
        for line in head.split("\r\n") {
            if !line.starts_with([' ', '\t']) {
                names.push(line.split_once(':').expect("header lines are `Name: value`").0);
            }
        }
        for required in [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
        ] {
            assert!(
                names.iter().any(|h| h.eq_ignore_ascii_case(required)),
                "{required} missing: {names:?}"
            );
        }
        assert!(
            head.lines().all(|l| l.len() <= 998),
            "header line over RFC 5322's limit"
        );

        let mail = parse_mail(path);
        check_message(&mail, &n);
        assert!(one_header(&mail, "Message-ID").ends_with("@example.com>"));
    }
}

#[test]
fn connection_refused_names_host_and_port() {
    let dir = TempDir::new().unwrap();
    let port = free_port(); // Bound and released: nothing listens.
    let notifier = Notifier::new(
        mail_config(Some(smtp(port, Security::None)), dir.path().join("o")),
        secrets(),
    )
    .unwrap();
    let err = notifier.send(&notification(dir.path())).unwrap_err();
    assert!(
        matches!(err, NotifyError::Connect { .. }) && !err.is_bad_input(),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[test]
fn a_server_that_never_answers_times_out_naming_host_and_port() {
    let dir = TempDir::new().unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and keep the connection, never sending the greeting.
    let silent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(4));
        drop(conn);
    });
    let config = SmtpConfig {
        timeout_seconds: 1,
        ..smtp(port, Security::None)
    };
    let started = Instant::now();
    let err = Notifier::new(mail_config(Some(config), dir.path().join("o")), secrets())
        .unwrap()
        .send(&notification(dir.path()))
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, NotifyError::Timeout { seconds: 1, .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    silent.join().unwrap();
}

#[test]
fn invalid_addresses_name_the_field() {
    let outbox = PathBuf::from("unused");
    let err = Notifier::new(
        MailConfig {
            from: "ci at example".into(),
            ..mail_config(None, outbox.clone())
        },
        secrets(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, NotifyError::Address { field, .. } if field == "from"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`from`") && err.to_string().contains("ci at example"),
        "{err}"
    );

    let err = Notifier::new(
        MailConfig {
            to: vec!["a@example.com".into(), "b@example.com".into(), "c@".into()],
            ..mail_config(None, outbox.clone())
        },
        secrets(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`to[2]`") && err.to_string().contains("c@"),
        "{err}"
    );

    let err = Notifier::new(
        MailConfig {
            to: vec![],
            ..mail_config(None, outbox)
        },
        secrets(),
    )
    .unwrap_err();
    assert!(
        matches!(err, NotifyError::NoRecipients) && err.is_bad_input(),
        "{err:?}"
    );
}

#[test]
fn a_missing_report_is_an_error_naming_it_and_a_url_is_linked() {
    let (exp, trials) = experiment(ExperimentState::Succeeded);
    let missing = PathBuf::from("/nonexistent/mlci/report.html");
    let err = Notification::for_experiment(&exp, &trials, Some(ReportLink::Attach(missing))).unwrap_err();
    assert!(matches!(err, NotifyError::Report { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/mlci/report.html"), "{err}");

    let url = "https://ci.example.com/job/catsdogs/7/artifact/report.html?a=1&b=2";
    let n = Notification::for_experiment(&exp, &trials, Some(ReportLink::Url(url.into()))).unwrap();
    assert!(n.attachments.is_empty());
    assert!(n.text.contains(&format!("Report      {url}")), "{}", n.text);
    let escaped = url.replace('&', "&amp;");
    assert!(
        n.html.contains(&format!("<a href=\"{escaped}\">{escaped}</a>")),
        "{}",
        n.html
    );

    let n = Notification::for_experiment(&exp, &trials, Some(ReportLink::Url("javascript:alert(1)".into())))
        .unwrap();
    assert!(!n.html.contains("<a href"), "only http(s) links");
}

#[test]
fn subjects_state_the_outcome() {
    let (mut exp, trials) = experiment(ExperimentState::BudgetExhausted);
    let subject = |exp: &ExperimentRecord, trials: &[TrialRecord]| {
        Notification::for_experiment(exp, trials, None).unwrap().subject
    };
    assert_eq!(
        subject(&exp, &trials),
        "[mlci] cats<b>&dogs: budget spent, best val_accuracy 0.8125 (goal 0.80) after 3 trials"
    );
    exp.state = ExperimentState::Failed;
    assert_eq!(
        subject(&exp, &trials[1..2]),
        "[mlci] cats<b>&dogs: failed, no val_accuracy (goal 0.80) after 1 trial"
    );
    exp.state = ExperimentState::Running;
    exp.spec.objective.goal = None;
    exp.spec.name = "multi\nline".into();
    assert_eq!(
        subject(&exp, &trials[..1]),
        "[mlci] multi line: running, best val_accuracy 0.7610 after 1 trial"
    );
}
