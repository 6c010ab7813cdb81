//! Owns: [`Accounts`] — a node data directory bootstrapped the way an operator would, with the
//! real `kaskade accounts` command (an operator, two tenants and in tenant `school` an admin, a
//! host and a participant), plus [`login`] against a running node. Tests of nodes with access
//! control start them with [`Accounts::node_args`].

use crate::http;
use crate::mesh::TempDir;
use std::path::Path;
use std::process::{Command, Stdio};

/// The password of every account [`Accounts::create`] makes.
pub const PASSWORD: &str = "correct horse battery staple";
/// The tenant the test accounts belong to.
pub const TENANT: &str = "school";
/// A second tenant, with host `stranger`.
pub const OTHER_TENANT: &str = "other-school";

/// One account: tenant (`None` for the operator) and user id.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub tenant: Option<&'static str>,
    pub user: &'static str,
}

pub const OPERATOR: Account = Account {
    tenant: None,
    user: "root-op",
};
pub const ADMIN: Account = Account {
    tenant: Some(TENANT),
    user: "admin",
};
pub const HOST: Account = Account {
    tenant: Some(TENANT),
    user: "teacher",
};
pub const PARTICIPANT: Account = Account {
    tenant: Some(TENANT),
    user: "pupil",
};
pub const STRANGER: Account = Account {
    tenant: Some(OTHER_TENANT),
    user: "stranger",
};

/// A data directory with the test accounts; removed on drop.
pub struct Accounts {
    pub dir: TempDir,
}

/// Runs `bin accounts --data-dir dir args…` (passwords: [`PASSWORD`]).
pub fn run(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    run_in(bin, &["--data-dir", &dir.display().to_string()], args)
}

/// Runs `bin accounts <store> args…`, `store` naming the store (`--data-dir D`, `--etcd URL`).
pub fn run_in(bin: &Path, store: &[&str], args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("accounts")
        .args(store)
        .args(args)
        .env("KASKADE_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kaskade accounts {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Accounts {
    /// Creates the directory and the accounts with `bin accounts …`.
    pub fn create(bin: &Path) -> anyhow::Result<Self> {
        let dir = TempDir::new("accounts");
        let store = dir.0.display().to_string();
        create_accounts(bin, &["--data-dir", &store])?;
        Ok(Self { dir })
    }

    /// `--data-dir <dir>`: the node enforces access control with these accounts.
    pub fn node_args(&self) -> Vec<String> {
        vec!["--data-dir".into(), self.dir.0.display().to_string()]
    }
}

/// Makes the test accounts in the mesh's etcd at `etcd_url` (default prefix): nodes started with
/// `--etcd` and without `--insecure-dev` then enforce access control with them.
pub fn create_in_etcd(bin: &Path, etcd_url: &str) -> anyhow::Result<()> {
    create_accounts(bin, &["--etcd", etcd_url])
}

fn create_accounts(bin: &Path, store: &[&str]) -> anyhow::Result<()> {
    let run = |args: &[&str]| run_in(bin, store, args);
    {
        run(&["create-tenant", "--id", TENANT, "--name", "The School"])?;
        run(&["create-tenant", "--id", OTHER_TENANT, "--name", "Other"])?;
        run(&["create-user", "--user", OPERATOR.user, "--role", "operator"])?;
        for (account, role, name) in [
            (ADMIN, "tenant_admin", "School Admin"),
            (HOST, "host", "Teacher"),
            (PARTICIPANT, "participant", "Pupil"),
            (STRANGER, "host", "Stranger"),
        ] {
            run(&[
                "create-user",
                "--tenant",
                account.tenant.unwrap_or_default(),
                "--user",
                account.user,
                "--name",
                name,
                "--role",
                role,
            ])?;
        }
    }
    Ok(())
}

/// `POST {url}/api/login` for `account` with `password`: the HTTP response.
pub fn login_response(
    url: &str,
    account: Account,
    password: &str,
) -> anyhow::Result<http::Response> {
    let body = serde_json::json!({
        "tenant": account.tenant,
        "user": account.user,
        "password": password,
    });
    http::post(
        &format!("{url}/api/login"),
        "application/json",
        body.to_string().as_bytes(),
    )
}

/// Logs `account` in (with [`PASSWORD`]) and returns its access token.
pub fn login(url: &str, account: Account) -> anyhow::Result<String> {
    let r = login_response(url, account, PASSWORD)?;
    anyhow::ensure!(
        r.status == 200,
        "login of {}: {} {}",
        account.user,
        r.status,
        r.text()
    );
    let token = r.json()?["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("login answer without token"))?
        .to_owned();
    Ok(token)
}
