//! `kaskade accounts`: creates the first operator, tenants and their admins (and lists or deletes
//! them) directly in the mesh's store — etcd, or a stopped single node's `--data-dir` — so an
//! installation can be bootstrapped before any node runs. Passwords come from `KASKADE_PASSWORD`
//! or the first line of stdin, never from the command line (which other users can read).

use crate::config::{AccountsAction, AccountsArgs};
use crate::data_dir::{self, DataDirLock};
use anyhow::{Context, bail};
use kaskade_control::accounts::{AccountDirectory, AccountRole, TenantId, TenantLimits, UserId};
use kaskade_control::any::AnyControlPlane;
use kaskade_control::audit::{AuditAction, AuditLog, AuditRecord};
use kaskade_control::etcd::{EtcdControlPlane, EtcdOptions};
use kaskade_control::room_records::{delete_room, rooms_of};
use std::io::BufRead;
use std::sync::Arc;

fn role(name: &str) -> anyhow::Result<AccountRole> {
    Ok(match name {
        "operator" => AccountRole::Operator,
        "tenant_admin" | "tenant-admin" => AccountRole::TenantAdmin,
        "host" => AccountRole::Host,
        "participant" => AccountRole::Participant,
        other => bail!("unknown role {other:?}: operator, tenant_admin, host or participant"),
    })
}

fn password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("KASKADE_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        bail!("no password: set KASKADE_PASSWORD or write it on stdin");
    }
    Ok(line)
}

async fn store(args: &AccountsArgs) -> anyhow::Result<(AnyControlPlane, Option<DataDirLock>)> {
    if let Some(dir) = &args.store.data_dir {
        let (store, lock) = data_dir::open(dir)?;
        return Ok((AnyControlPlane::Memory(store), Some(lock)));
    }
    if args.store.etcd.is_empty() {
        bail!("give --data-dir DIR (a single node's store) or --etcd URLS (a mesh's)");
    }
    let etcd = EtcdControlPlane::connect(EtcdOptions {
        endpoints: args.store.etcd.clone(),
        prefix: args.store.etcd_prefix.clone(),
        request_timeout: std::time::Duration::from_secs(3),
    })
    .await
    .context("connecting to etcd")?;
    Ok((AnyControlPlane::Etcd(etcd), None))
}

/// An audit record of this command (actor `cli`: whoever can run it owns the store).
fn cli_record(tenant: Option<&str>, action: AuditAction, target: &str) -> AuditRecord {
    AuditRecord {
        at_ms: crate::audit::now_ms(),
        tenant: tenant.map(str::to_owned),
        actor: "cli".into(),
        action,
        target: Some(target.to_owned()),
        detail: None,
        address: None,
    }
}

fn tenant_id(id: &str) -> anyhow::Result<TenantId> {
    TenantId::new(id).with_context(|| format!("tenant id {id:?}"))
}

/// Runs one `kaskade accounts` action.
pub async fn run(args: AccountsArgs) -> anyhow::Result<()> {
    // The data directory stays locked until this returns.
    let (control, _lock) = store(&args).await?;
    let control = Arc::new(control);
    let directory = AccountDirectory::new(control.clone());
    let audit = AuditLog::new(control.clone());
    let now_ms = crate::auth::tokens::unix_now() * 1000;
    match args.action {
        AccountsAction::CreateTenant {
            id,
            name,
            max_rooms,
            max_participants,
        } => {
            let defaults = TenantLimits::default();
            let limits = TenantLimits {
                max_rooms: max_rooms.unwrap_or(defaults.max_rooms),
                max_participants_per_room: max_participants
                    .unwrap_or(defaults.max_participants_per_room),
            };
            let tenant = directory
                .create_tenant(tenant_id(&id)?, &name, limits, now_ms)
                .await?;
            println!("tenant {} ({}) created", tenant.id, tenant.name);
            audit
                .append(&cli_record(
                    None,
                    AuditAction::TenantCreated,
                    tenant.id.as_str(),
                ))
                .await?;
        }
        AccountsAction::CreateUser {
            tenant,
            user,
            name,
            role: role_name,
        } => {
            let tenant = tenant.as_deref().map(tenant_id).transpose()?;
            let user = UserId::new(user.as_str()).with_context(|| format!("user id {user:?}"))?;
            let name = name.unwrap_or_else(|| user.to_string());
            let account = directory
                .create_account(
                    tenant.as_ref(),
                    user,
                    &name,
                    role(&role_name)?,
                    &password()?,
                    now_ms,
                )
                .await?;
            match &account.tenant {
                Some(t) => println!("{} {} of tenant {t} created", account.role, account.user),
                None => println!("{} {} created", account.role, account.user),
            }
            let mut record = cli_record(
                account.tenant.as_ref().map(|t| t.as_str()),
                AuditAction::AccountCreated,
                account.user.as_str(),
            );
            record.detail = Some(format!("role {}", account.role));
            audit.append(&record).await?;
        }
        AccountsAction::List { tenant, tenants } => {
            if tenants {
                for t in directory.list_tenants().await? {
                    println!("{}\t{}", t.id, t.name);
                }
            } else {
                let tenant = tenant.as_deref().map(tenant_id).transpose()?;
                for a in directory.list_accounts(tenant.as_ref()).await? {
                    let locked = if a.attempts.is_locked(now_ms) {
                        "\tlocked"
                    } else {
                        ""
                    };
                    println!("{}\t{}\t{}{locked}", a.user, a.role, a.display_name);
                }
            }
        }
        AccountsAction::DeleteTenant { id } => {
            if directory.delete_tenant(&tenant_id(&id)?).await? {
                // Deleting a tenant deletes its data: its rooms and audit records too (the
                // deletion itself is recorded at installation level).
                for (name, _) in rooms_of(control.as_ref(), &id).await? {
                    if let Ok(room) = kaskade_proto::RoomName::parse(&name) {
                        delete_room(control.as_ref(), &room).await?;
                    }
                }
                audit.delete_tenant(&id).await?;
                audit
                    .append(&cli_record(None, AuditAction::TenantDeleted, &id))
                    .await?;
                println!("tenant {id} deleted");
            } else {
                bail!("there is no tenant {id}");
            }
        }
    }
    Ok(())
}
