//! The egress proxy end to end: the real AWS CLI and boto3 inside `sandbox run`, against a local
//! moto server over HTTPS on loopback (its own CA, trusted by the proxy through the profile's
//! `network.upstream_ca`). Delete calls wait for a human; everything else passes untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{text, World};
use serde_json::Value;

/// True when `tool` is on PATH. Missing under CI is a failure (`.ci/run` installs them).
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t} >/dev/null")])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{missing:?} not installed, and CI is set: refusing to skip (scripts/setup.sh installs them)");
    }
    eprintln!("SKIP: {missing:?} not installed (scripts/setup.sh installs them)");
    false
}

/// A moto server on 127.0.0.1 with a certificate for `localhost` from a CA of its own.
struct Cloud {
    dir: tempfile::TempDir,
    port: u16,
    server: Child,
}

impl Cloud {
    fn start() -> Cloud {
        let dir = tempfile::Builder::new()
            .prefix("guard-cloud-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let sh = |script: &str| {
            let o = Command::new("sh")
                .args(["-c", script])
                .current_dir(d)
                .output()
                .expect("sh");
            assert!(o.status.success(), "{script}: {}", text(&o));
        };
        sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=guard test CA' \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign");
        sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost");
        std::fs::write(
            d.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        sh("openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(d.join("moto.log")).expect("log");
        let server = Command::new("moto_server")
            .args([
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-c",
                "srv.pem",
                "-k",
                "srv.key",
            ])
            .current_dir(d)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("moto_server");
        let c = Cloud { dir, port, server };
        let t0 = Instant::now();
        loop {
            let o = c.aws(&["s3", "ls"]);
            if o.status.success() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "moto did not come up: {}\n{}",
                text(&o),
                std::fs::read_to_string(c.dir.path().join("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::fs::write(
            c.dir.path().join("test.toml"),
            format!(
                "description = \"proxy tests\"\n[network]\ninspect = [\"localhost\"]\nhold = [\"cloud-deletes\"]\nupstream_ca = [\"{}\"]\n[process]\nenv_pass = [\"AWS_*\"]\n",
                c.ca().display()
            ),
        )
        .expect("profile");
        std::fs::write(
            c.dir.path().join("aws-config"),
            "[default]\nregion = us-east-1\n",
        )
        .expect("aws config");
        c
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn profile(&self) -> PathBuf {
        self.dir.path().join("test.toml")
    }

    fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The AWS environment of both sides (fake keys; nothing of root's own ~/.aws).
    fn env(&self, c: &mut Command) {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-credentials"),
            );
    }

    /// The AWS CLI on the host, straight to moto (for set-up and checks).
    fn aws(&self, args: &[&str]) -> Output {
        let mut c = Command::new("aws");
        self.env(&mut c);
        c.args(["--endpoint-url", &self.endpoint(), "--ca-bundle"])
            .arg(self.ca())
            .args(["--output", "json"])
            .args(args)
            .output()
            .expect("aws")
    }

    fn aws_ok(&self, args: &[&str]) -> Value {
        let o = self.aws(args);
        assert!(o.status.success(), "aws {args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// `sandbox run --user root --profile test.toml EXTRA -- sh -c SCRIPT` (root: the Python
    /// of these machines lives under /root). `$E` in the script is `--endpoint-url URL`.
    fn run(&self, w: &World, session: &str, extra: &[&str], script: &str) -> common::Running {
        let profile = self.profile().display().to_string();
        let mut args = vec![
            "run",
            "--user",
            "root",
            "--session",
            session,
            "--profile",
            &profile,
        ];
        args.extend_from_slice(extra);
        let script = format!("E='--endpoint-url {}'\n{script}", self.endpoint());
        args.extend(["--", "sh", "-c", &script]);
        let mut cmd = w.cmd(&args);
        self.env(&mut cmd);
        let child = cmd
            .current_dir(&w.work)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sandbox");
        common::Running::from_child(child, session)
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn ready() -> Option<Cloud> {
    if !common::privileged() || !have(&["aws", "moto_server", "python3", "openssl", "curl"]) {
        return None;
    }
    Some(Cloud::start())
}

#[test]
fn ordinary_cloud_calls_pass_without_a_hold() {
    let Some(cloud) = ready() else { return };
    let w = World::new();
    w.file("obj", "data\n");
    // A short decision timeout: anything held would be denied and fail the script.
    let r = cloud.run(
        &w,
        "cloud-ok",
        &["--decision-timeout", "5s"],
        "set -e
aws $E s3 mb s3://keep-bucket
aws $E s3 cp obj s3://keep-bucket/obj
aws $E s3 ls s3://keep-bucket
aws $E ec2 run-instances --image-id ami-12c6146b --count 1 --query 'Instances[0].InstanceId' --output text
aws $E ec2 describe-instances --output text >/dev/null
aws $E dynamodb create-table --table-name keep-table --attribute-definitions AttributeName=k,AttributeType=S \
    --key-schema AttributeName=k,KeyType=HASH --billing-mode PAY_PER_REQUEST >/dev/null
aws $E rds create-db-instance --db-instance-identifier keep-db --db-instance-class db.t3.micro --engine postgres \
    --master-username u --master-user-password passw0rdpassw0rd --allocated-storage 20 >/dev/null
curl -sS -o /dev/null -w '%{http_code}\\n' https://localhost:${E##*:}/moto-api/
grep -c 'Guard sandbox' /etc/ssl/certs/ca-certificates.crt
echo done",
    );
    let out = r.finish(Duration::from_secs(180));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("obj") && stdout.contains("done"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("\n200\n"),
        "a GET through the interception: {}",
        text(&out)
    );
    assert!(
        !w.log("cloud-ok").iter().any(|e| e["kind"] == "hold"),
        "nothing is held"
    );
    cloud.aws_ok(&["dynamodb", "describe-table", "--table-name", "keep-table"]);
    cloud.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "keep-bucket",
        "--key",
        "obj",
    ]);
}

/// Resources to destroy, made on the host straight at moto.
struct Doomed {
    instance: String,
}

fn make_doomed(cloud: &Cloud, w: &World) -> Doomed {
    let obj = w.file("seed", "seed");
    let objs = obj.display().to_string();
    cloud.aws_ok(&["s3", "mb", "s3://doomed-bucket"]);
    cloud.aws_ok(&["s3", "cp", &objs, "s3://doomed-bucket/seed"]);
    cloud.aws_ok(&["s3", "mb", "s3://batch-bucket"]);
    for k in ["a", "b", "c"] {
        cloud.aws_ok(&["s3", "cp", &objs, &format!("s3://batch-bucket/{k}")]);
    }
    let v = cloud.aws_ok(&[
        "ec2",
        "run-instances",
        "--image-id",
        "ami-12c6146b",
        "--count",
        "1",
    ]);
    let instance = v["Instances"][0]["InstanceId"]
        .as_str()
        .expect("instance id")
        .to_string();
    cloud.aws_ok(&[
        "dynamodb",
        "create-table",
        "--table-name",
        "doomed-table",
        "--attribute-definitions",
        "AttributeName=k,AttributeType=S",
        "--key-schema",
        "AttributeName=k,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    ]);
    cloud.aws_ok(&[
        "rds",
        "create-db-instance",
        "--db-instance-identifier",
        "doomed-db",
        "--db-instance-class",
        "db.t3.micro",
        "--engine",
        "postgres",
        "--master-username",
        "u",
        "--master-user-password",
        "passw0rdpassw0rd",
        "--allocated-storage",
        "20",
    ]);
    Doomed { instance }
}

/// Runs the destructive calls in a session, deciding every hold with `verb` as it comes.
/// Returns the holds and the output.
fn destroy(
    cloud: &Cloud,
    w: &World,
    d: &Doomed,
    session: &str,
    verb: &str,
) -> (Vec<Value>, Output) {
    let script = format!(
        "aws $E s3 rb --force s3://doomed-bucket; echo rb=$?
python3 -c 'import boto3, os
s3 = boto3.client(\"s3\", endpoint_url=\"{ep}\")
s3.delete_objects(Bucket=\"batch-bucket\", Delete={{\"Objects\": [{{\"Key\": \"a\"}}, {{\"Key\": \"b\"}}]}})' ; echo boto=$?
aws $E ec2 terminate-instances --instance-ids {id} >/dev/null; echo ec2=$?
aws $E dynamodb delete-table --table-name doomed-table >/dev/null; echo ddb=$?
aws $E rds delete-db-instance --db-instance-identifier doomed-db --skip-final-snapshot >/dev/null; echo rds=$?
",
        ep = cloud.endpoint(),
        id = d.instance
    );
    let mut r = cloud.run(w, session, &[], &script);
    let mut seen = Vec::new();
    let t0 = Instant::now();
    loop {
        for h in w.pending().into_iter().filter(|h| h["session"] == session) {
            w.decide(
                verb,
                h["id"].as_str().expect("hold id"),
                &["--scope", "once"],
            );
            seen.push(h);
        }
        if r.child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "session {session} did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (seen, r.finish(Duration::from_secs(10)))
}

fn held_details(holds: &[Value]) -> String {
    holds
        .iter()
        .map(|h| {
            format!(
                "{} {} [{}] {}",
                h["kind"], h["target"], h["rule"], h["detail"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_holds(holds: &[Value], d: &Doomed) {
    let all = held_details(holds);
    eprintln!("holds:\n{all}");
    assert!(holds.iter().all(|h| h["kind"] == "http"), "{all}");
    assert!(
        holds.iter().all(|h| h["pid"].as_u64().unwrap_or(0) > 0),
        "the process is named: {all}"
    );
    for want in [
        "doomed-bucket",
        "DeleteObjects",
        "TerminateInstances",
        d.instance.as_str(),
        "DeleteTable",
        "doomed-table",
        "DeleteDBInstance",
        "doomed-db",
    ] {
        assert!(all.contains(want), "a hold mentions {want}:\n{all}");
    }
}

#[test]
fn denied_deletes_fail_and_the_resources_survive() {
    let Some(cloud) = ready() else { return };
    let w = World::new();
    let d = make_doomed(&cloud, &w);
    let (holds, out) = destroy(&cloud, &w, &d, "cloud-deny", "deny");
    check_holds(&holds, &d);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for k in ["rb", "boto", "ec2", "ddb", "rds"] {
        assert!(
            stdout.contains(&format!("{k}=")) && !stdout.contains(&format!("{k}=0")),
            "{k} fails when denied: {}",
            text(&out)
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AccessDenied"),
        "the CLI prints the denial sensibly: {}",
        text(&out)
    );
    cloud.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "doomed-bucket",
        "--key",
        "seed",
    ]);
    for k in ["a", "b", "c"] {
        cloud.aws_ok(&[
            "s3api",
            "head-object",
            "--bucket",
            "batch-bucket",
            "--key",
            k,
        ]);
    }
    let v = cloud.aws_ok(&["ec2", "describe-instances", "--instance-ids", &d.instance]);
    assert_eq!(
        v["Reservations"][0]["Instances"][0]["State"]["Name"],
        "running"
    );
    cloud.aws_ok(&["dynamodb", "describe-table", "--table-name", "doomed-table"]);
    cloud.aws_ok(&[
        "rds",
        "describe-db-instances",
        "--db-instance-identifier",
        "doomed-db",
    ]);
    let log = w.log("cloud-deny");
    assert!(log
        .iter()
        .any(|e| e["kind"] == "decision" && e["decision"] == "deny"));
}

#[test]
fn approved_deletes_go_through() {
    let Some(cloud) = ready() else { return };
    let w = World::new();
    let d = make_doomed(&cloud, &w);
    let (holds, out) = destroy(&cloud, &w, &d, "cloud-approve", "approve");
    check_holds(&holds, &d);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for k in ["rb", "boto", "ec2", "ddb", "rds"] {
        assert!(
            stdout.contains(&format!("{k}=0")),
            "{k} succeeds when approved: {}",
            text(&out)
        );
    }
    assert!(!cloud
        .aws(&["s3api", "head-bucket", "--bucket", "doomed-bucket"])
        .status
        .success());
    for k in ["a", "b"] {
        assert!(!cloud
            .aws(&[
                "s3api",
                "head-object",
                "--bucket",
                "batch-bucket",
                "--key",
                k
            ])
            .status
            .success());
    }
    cloud.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "batch-bucket",
        "--key",
        "c",
    ]);
    let v = cloud.aws_ok(&["ec2", "describe-instances", "--instance-ids", &d.instance]);
    assert_ne!(
        v["Reservations"][0]["Instances"][0]["State"]["Name"],
        "running"
    );
    assert!(!cloud
        .aws(&["dynamodb", "describe-table", "--table-name", "doomed-table"])
        .status
        .success());
    assert!(!cloud
        .aws(&[
            "rds",
            "describe-db-instances",
            "--db-instance-identifier",
            "doomed-db"
        ])
        .status
        .success());
}

#[test]
fn other_hosts_are_refused_and_nothing_bypasses_the_proxy() {
    let Some(cloud) = ready() else { return };
    let w = World::new();
    let r = cloud.run(
        &w,
        "cloud-net",
        &[],
        "curl -sS -m 10 https://unlisted.example/ 2>&1; echo unlisted=$?
curl -sS -m 10 --noproxy '*' --cacert /etc/ssl/certs/ca-certificates.crt https://localhost:${E##*:}/moto-api/ 2>&1; echo bypass=$?",
    );
    let out = r.finish(Duration::from_secs(60));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("403") && s.contains("unlisted=56"),
        "{}",
        text(&out)
    );
    assert!(
        s.contains("bypass=7"),
        "connection refused without the proxy: {}",
        text(&out)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let r = w.spawn(
        &[
            "run", "--user", "root", "--session", "cloud-none", "--net", "none", "--", "sh", "-c",
            &format!(
                "env | grep -ci _proxy; curl -sS -m 10 --cacert {ca} https://localhost:{p}/ 2>&1; echo none=$?",
                ca = cloud.ca().display(),
                p = cloud.port
            ),
        ],
        "cloud-none",
    );
    drop(dir);
    let out = r.finish(Duration::from_secs(60));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with("0\n") && s.contains("none=7"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_missing_catalogue_or_ca_is_a_setup_error() {
    if !common::privileged() {
        return;
    }
    let w = World::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = |body: &str| -> Output {
        let p: &Path = dir.path();
        let f = p.join("p.toml");
        std::fs::write(&f, body).expect("write");
        w.cmd(&[
            "run",
            "--profile",
            &f.display().to_string(),
            "--user",
            "nobody",
            "--",
            "true",
        ])
        .output()
        .expect("run")
    };
    let o = bad("[network]\nhold = [\"no-such-rules\"]\n");
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-rules"),
        "{}",
        text(&o)
    );
    let o = bad("[network]\nupstream_ca = [\"/nonexistent/ca.pem\"]\n");
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/ca.pem"),
        "{}",
        text(&o)
    );
    let o = w
        .cmd(&[
            "run",
            "--allow-host",
            "bad host",
            "--user",
            "nobody",
            "--",
            "true",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
}

/// The fake Messages API (tests/fixtures/fake_messages_api.py) on 127.0.0.1; killed on drop.
struct FakeApi {
    dir: tempfile::TempDir,
    port: u16,
    server: Child,
}

impl FakeApi {
    fn start(command: &str) -> FakeApi {
        let dir = tempfile::Builder::new()
            .prefix("guard-fakeapi-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let port_file = dir.path().join("port");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/fake_messages_api.py"
        );
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let server = Command::new("python3")
            .arg(script)
            .arg(&port_file)
            .arg(command)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("python3");
        let t0 = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().expect("port");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "fake API did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        FakeApi { dir, port, server }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn server_sent_events_stream_through_the_proxy_unbuffered() {
    if !common::privileged() || !have(&["python3", "curl"]) {
        return;
    }
    let api = FakeApi::start("true");
    let w = World::new();
    let script = format!(
        "curl -sSN http://localhost:{}/sse | while IFS= read -r l; do case $l in event*) date +%s.%N;; esac; done",
        api.port
    );
    let out = w
        .spawn(
            &[
                "run",
                "--user",
                "nobody",
                "--session",
                "sse",
                "--allow-host",
                "localhost",
                "--",
                "sh",
                "-c",
                &script,
            ],
            "sse",
        )
        .finish(Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(times.len(), 5, "five events: {}\n{}", text(&out), api.log());
    // The server pauses 300 ms between events: a buffering proxy would deliver them together.
    let spread = times[4] - times[0];
    assert!(
        spread > 0.9,
        "events arrive as they are sent (spread {spread:.3}s)"
    );
    for w2 in times.windows(2) {
        let gap = w2[1] - w2[0];
        assert!(
            gap > 0.15 && gap < 0.6,
            "one event per pause, none delayed: gaps {times:?}"
        );
    }
}

#[test]
fn claude_code_runs_through_the_proxy_against_a_fake_model_api() {
    if !common::privileged() || !have(&["python3", "claude"]) {
        return;
    }
    let w = World::new();
    let marker = w.work.join("tool-ran.txt");
    let api = FakeApi::start(&format!("echo through-the-proxy > {}", marker.display()));
    let cfg = w.dir("claude-config");
    let out = w
        .cmd(&[
            "run",
            "--user",
            "nobody",
            "--session",
            "claude-e2e",
            "--allow-host",
            "localhost",
            "--",
            "claude",
            "-p",
            "run the test command",
            "--allowedTools",
            "Bash",
        ])
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://localhost:{}", api.port),
        )
        .env("ANTHROPIC_API_KEY", "sk-fake-key")
        .env("CLAUDE_CONFIG_DIR", &cfg)
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .current_dir(&w.work)
        .output()
        .expect("sandbox run claude");
    assert!(out.status.success(), "{}\n{}", text(&out), api.log());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAKE-MODEL-DONE"),
        "{}\n{}",
        text(&out),
        api.log()
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "through-the-proxy",
        "the Bash tool ran: {}",
        api.log()
    );
    assert!(
        api.log().matches("POST /v1/messages").count() >= 2,
        "{}",
        api.log()
    );
}

/// A PostgreSQL server on 127.0.0.1 (run as nobody, trust authentication); stopped on drop.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("/usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::Builder::new()
            .prefix("guard-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path().display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let o = Command::new("chown")
            .args(["nobody:nogroup", &d])
            .output()
            .expect("chown");
        assert!(o.status.success(), "{}", text(&o));
        let as_nobody = |args: &[&str]| {
            let o = Command::new("runuser")
                .args(["-u", "nobody", "--"])
                .args(args)
                .current_dir("/")
                .output()
                .expect("runuser");
            assert!(o.status.success(), "{args:?}: {}", text(&o));
        };
        let initdb = bin.join("initdb").display().to_string();
        let pg_ctl = bin.join("pg_ctl").display().to_string();
        as_nobody(&[
            &initdb,
            "-D",
            &format!("{d}/data"),
            "--auth=trust",
            "-U",
            "nobody",
        ]);
        as_nobody(&[
            &pg_ctl,
            "-D",
            &format!("{d}/data"),
            "-l",
            &format!("{d}/log"),
            "-w",
            "-o",
            &format!("-p {port} -k {d} -c listen_addresses=127.0.0.1"),
            "start",
        ]);
        Postgres { dir, bin, port }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .current_dir("/")
            .output();
    }
}

/// `psql` in a session (`--net NET`) whose profile holds connecting to the database; the
/// first hold is decided with `verb`. Returns the hold and the output.
fn psql_held(verb: &str, net: &str) -> Option<(Value, Output)> {
    if !common::privileged() || !have(&["psql", "runuser"]) {
        return None;
    }
    let pg = Postgres::start();
    let w = World::new();
    let profile = w.file(
        "db.toml",
        &format!("[network]\nhold_connect = [\"127.0.0.1:{}\"]\n", pg.port),
    );
    let session = format!("psql-{verb}-{net}");
    let (profile, port) = (profile.display().to_string(), pg.port.to_string());
    let r = w.spawn(
        &[
            "run",
            "--user",
            "nobody",
            "--session",
            &session,
            "--net",
            net,
            "--profile",
            &profile,
            "--",
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "nobody",
            "-d",
            "postgres",
            "-Atc",
            "select 40 + 2",
        ],
        &session,
    );
    let h = common::decide_first(&w, &session, verb);
    Some((h, r.finish(Duration::from_secs(60))))
}

#[test]
fn hold_connect_holds_psql_and_a_denial_fails_it() {
    for net in ["proxy", "host"] {
        let Some((h, out)) = psql_held("deny", net) else {
            return;
        };
        assert_eq!(h["kind"], "connect");
        assert!(
            h["target"].as_str().unwrap_or("").starts_with("127.0.0.1:"),
            "{h}"
        );
        assert_eq!(h["comm"], "psql", "{h}");
        assert!(!out.status.success(), "{net}: {}", text(&out));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("42"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn hold_connect_approved_psql_connects() {
    for net in ["proxy", "host"] {
        let Some((h, out)) = psql_held("approve", net) else {
            return;
        };
        assert_eq!(h["kind"], "connect");
        assert!(out.status.success(), "{net}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "42",
            "{}",
            text(&out)
        );
    }
}

/// With `--net host`, a thread flipping the port of the address another thread connects
/// through gets past the seccomp look now and then; the cgroup connect4 backstop must refuse
/// every one of those that lands on the held port.
#[test]
fn host_mode_connect_races_never_reach_a_held_endpoint() {
    if !common::privileged() {
        return;
    }
    let (fp, _free_n) = common::counting_server();
    let (hp, held_n) = common::counting_server();
    let w = World::new();
    let profile = w.file(
        "race.toml",
        &format!("[network]\nhold_connect = [\"127.0.0.1:{hp}\"]\n"),
    );
    let race = common::prog("race_connect");
    let (profile, race) = (profile.display().to_string(), race.display().to_string());
    let (fps, hps) = (fp.to_string(), hp.to_string());
    let r = w.spawn(
        &[
            "run",
            "--user",
            "nobody",
            "--session",
            "race-connect",
            "--net",
            "host",
            "--profile",
            &profile,
            "--",
            &race,
            &fps,
            &hps,
            "4",
        ],
        "race-connect",
    );
    // One denial for the process stands for the rest of its life (the default scope).
    let h = common::decide_first(&w, "race-connect", "deny");
    assert_eq!(h["kind"], "connect");
    let out = r.finish(Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("held_connected 0"), "{}", text(&out));
    assert!(
        !s.contains("free_connected 0 "),
        "the race ran: {}",
        text(&out)
    );
    assert_eq!(
        held_n.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "{}",
        text(&out)
    );
}

/// A client that gives up on a held request (its read timeout) takes its hold with it: nothing
/// is left for a human to approve into the void.
#[test]
fn a_hold_whose_client_gave_up_is_withdrawn() {
    if !common::privileged() || !have(&["python3", "curl"]) {
        return;
    }
    let api = FakeApi::start("true");
    let w = World::new();
    let profile = w.file(
        "k8s.toml",
        "[network]\ninspect = [\"localhost\"]\nhold = [\"cloud-deletes\"]\n",
    );
    let profile = profile.display().to_string();
    let url = format!(
        "http://localhost:{}/api/v1/namespaces/default/pods/web-1",
        api.port
    );
    let script = format!("curl -sS -m 3 -X DELETE {url}; echo curl=$?; sleep 2");
    let r = w.spawn(
        &[
            "run",
            "--user",
            "nobody",
            "--session",
            "gave-up",
            "--profile",
            &profile,
            "--",
            "sh",
            "-c",
            &script,
        ],
        "gave-up",
    );
    let h = w.wait_hold("gave-up", Duration::from_secs(30));
    assert_eq!(h["kind"], "http", "{h}");
    assert!(
        h["target"]
            .as_str()
            .unwrap_or("")
            .starts_with("DELETE http://localhost:"),
        "{h}"
    );
    let out = r.finish(Duration::from_secs(60));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("curl=28"),
        "curl timed out: {}",
        text(&out)
    );
    let log = w.log("gave-up");
    assert!(
        log.iter()
            .any(|e| e["kind"] == "decision" && e["by"] == "client went away"),
        "the hold was withdrawn when curl gave up: {log:?}"
    );
    assert!(
        !api.log().contains("DELETE"),
        "nothing reached the server: {}",
        api.log()
    );
}

/// A TLS origin on 127.0.0.1 that speaks only HTTP/2 (ALPN h2), with a CA of its own; answers
/// every request with "METHOD PATH VERSION".
struct H2Origin {
    dir: tempfile::TempDir,
    port: u16,
}

impl H2Origin {
    fn start() -> H2Origin {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_l.local_addr().unwrap().port();
        std_l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_l).unwrap();
                loop {
                    let Ok((tcp, _)) = l.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(
                            |req: hyper::Request<hyper::body::Incoming>| async move {
                                let body = format!(
                                    "{} {} {:?}\n",
                                    req.method(),
                                    req.uri().path(),
                                    req.version()
                                );
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            },
                        );
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                    });
                }
            });
        });
        H2Origin { dir, port }
    }
}

#[test]
fn http2_is_intercepted_and_classified() {
    if !common::privileged() || !have(&["curl"]) {
        return;
    }
    let origin = H2Origin::start();
    let w = World::new();
    let profile = w.file(
        "h2.toml",
        &format!(
            "[network]\ninspect = [\"localhost\"]\nhold = [\"cloud-deletes\"]\nupstream_ca = [\"{}\"]\n",
            origin.dir.path().join("ca.pem").display()
        ),
    );
    let profile = profile.display().to_string();
    let base = format!("https://localhost:{}", origin.port);
    let script = format!(
        "curl -sS --http2 -w 'v=%{{http_version}}\\n' {base}/hello
curl -sS --http2 -m 30 -X DELETE -o /dev/null -w 'delete=%{{http_code}} v=%{{http_version}}\\n' {base}/api/v1/namespaces/default/pods/web-1"
    );
    let r = w.spawn(
        &[
            "run",
            "--user",
            "nobody",
            "--session",
            "h2",
            "--profile",
            &profile,
            "--",
            "sh",
            "-c",
            &script,
        ],
        "h2",
    );
    let h = common::decide_first(&w, "h2", "deny");
    assert_eq!(h["kind"], "http", "{h}");
    assert_eq!(
        h["target"],
        format!("DELETE {base}/api/v1/namespaces/default/pods/web-1"),
        "{h}"
    );
    let out = r.finish(Duration::from_secs(60));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("GET /hello HTTP/2.0"),
        "the origin saw HTTP/2: {}",
        text(&out)
    );
    assert!(
        s.contains("v=2\n"),
        "the client spoke HTTP/2 to the proxy: {}",
        text(&out)
    );
    assert!(
        s.contains("delete=403 v=2"),
        "denied over HTTP/2: {}",
        text(&out)
    );
}

#[test]
fn unknown_hosts_hold_waits_like_a_permission_prompt() {
    if !common::privileged() || !have(&["python3", "curl"]) {
        return;
    }
    let api = FakeApi::start("true");
    let w = World::new();
    let profile = w.file("ask.toml", "[network]\nunknown_hosts = \"hold\"\n");
    let profile = profile.display().to_string();
    let url = format!("http://localhost:{}/sse", api.port);
    let script = format!(
        "curl -sS -m 30 -o /dev/null -w 'first=%{{http_code}}\\n' {url}
curl -sS -m 30 -o /dev/null -w 'second=%{{http_code}}\\n' {url}"
    );
    let r = w.spawn(
        &[
            "run",
            "--user",
            "nobody",
            "--session",
            "ask",
            "--profile",
            &profile,
            "--",
            "sh",
            "-c",
            &script,
        ],
        "ask",
    );
    let first = w.wait_hold("ask", Duration::from_secs(30));
    assert_eq!(first["kind"], "connect", "{first}");
    assert_eq!(
        first["target"],
        format!("localhost:{}", api.port),
        "{first}"
    );
    w.decide("deny", first["id"].as_str().unwrap(), &["--scope", "once"]);
    let t0 = Instant::now();
    let second = loop {
        if let Some(h) = w
            .pending()
            .into_iter()
            .find(|h| h["session"] == "ask" && h["id"] != first["id"])
        {
            break h;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no second hold");
        std::thread::sleep(Duration::from_millis(20));
    };
    w.decide("approve", second["id"].as_str().unwrap(), &[]);
    let out = r.finish(Duration::from_secs(60));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("first=403") && s.contains("second=200"),
        "{}",
        text(&out)
    );
}

/// A tunnel to an allowed address cannot carry TLS for an inspected name (CONNECT by IP, SNI of
/// the inspected host): the proxy reads the ClientHello and cuts such a tunnel off.
#[test]
fn a_tunnel_cannot_smuggle_tls_for_an_inspected_host() {
    if !common::privileged() || !have(&["curl"]) {
        return;
    }
    let origin = H2Origin::start();
    let w = World::new();
    let ca = origin.dir.path().join("ca.pem");
    let profile = w.file(
        "smuggle.toml",
        "[network]\nallow = [\"*\"]\ninspect = [\"localhost\"]\n",
    );
    let profile = profile.display().to_string();
    let p = origin.port;
    let script = format!(
        "curl -sS -m 10 --cacert {ca} --connect-to localhost:{p}:127.0.0.1:{p} https://localhost:{p}/x 2>&1; echo smuggled=$?
curl -sS -m 10 -k https://127.0.0.1:{p}/plain; echo plain=$?",
        ca = ca.display()
    );
    let out = w
        .spawn(
            &[
                "run",
                "--user",
                "nobody",
                "--session",
                "smuggle",
                "--profile",
                &profile,
                "--",
                "sh",
                "-c",
                &script,
            ],
            "smuggle",
        )
        .finish(Duration::from_secs(60));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        !s.contains("smuggled=0"),
        "the smuggling tunnel was cut: {}",
        text(&out)
    );
    assert!(
        s.contains("GET /plain HTTP/2.0") && s.contains("plain=0"),
        "a plain tunnel works: {}",
        text(&out)
    );
    assert!(
        w.log("smuggle")
            .iter()
            .any(|e| e["kind"] == "tunnel_refused" && e["sni"] == "localhost"),
        "the refusal is in the audit log"
    );
}
