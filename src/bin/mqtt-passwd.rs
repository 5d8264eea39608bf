//! `mqtt-passwd`: manage mqttd's password file.
//!
//! Every edit is a locked read-modify-write with an atomic rename (see `mqttd::auth::passwd`), so it
//! is safe to run while the broker is up; the broker picks the change up on reload. Passwords are
//! never printed, and are read without echo unless `--password-stdin` is given.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use mqttd::auth::credentials::scram::{self, ScramCredentials};
use mqttd::auth::credentials::{Argon2Params, hash_argon2id, needs_rehash};
use mqttd::auth::passwd::{PasswdError, PasswordFile, validate_username};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "mqtt-passwd",
    version,
    about = "Manage mqttd's password file (argon2id hashes, optional SCRAM-SHA-256 credentials) \
             and the HTTP API's keys",
    after_help = "Exit status: 0 on success; `verify` exits 1 when the password does not match \
                  (or the user is unknown); any error exits 2."
)]
struct Cli {
    /// The password file. Created (mode 0600) by `add` and `import` if missing.
    #[arg(long, short, global = true, default_value = "config/passwd")]
    file: PathBuf,
    #[command(flatten)]
    cost: Cost,
    #[command(subcommand)]
    command: Command,
}

/// argon2id cost for new hashes (defaults: OWASP's minimum, m=19456 t=2 p=1).
#[derive(Args)]
struct Cost {
    /// argon2id memory in KiB (at most 262144).
    #[arg(long, global = true, default_value_t = Argon2Params::default().m_cost)]
    m_cost: u32,
    /// argon2id passes (at most 10).
    #[arg(long, global = true, default_value_t = Argon2Params::default().t_cost)]
    t_cost: u32,
    /// argon2id lanes (at most 16).
    #[arg(long, global = true, default_value_t = Argon2Params::default().p_cost)]
    p_cost: u32,
}

#[derive(Subcommand)]
enum Command {
    /// Add USER, or change their password. Prompts twice without echo. Without --scram, any SCRAM
    /// credentials USER had are removed (they belong to the old password).
    Add {
        user: String,
        /// Read the password as one line from standard input instead (for scripts).
        #[arg(long)]
        password_stdin: bool,
        /// Also store SCRAM-SHA-256 credentials, so USER can log in with MQTT 5.0 enhanced
        /// authentication (Authentication Method "SCRAM-SHA-256") as well as with the password.
        /// Off by default: a leaked file's PBKDF2 credentials are cheaper to attack than argon2id.
        #[arg(long)]
        scram: bool,
        /// PBKDF2 iterations for the SCRAM credentials (at least 4096, RFC 7677's minimum; the
        /// client computes them on every SCRAM login).
        #[arg(long, default_value_t = scram::DEFAULT_ITERATIONS, requires = "scram")]
        scram_iterations: u32,
    },
    /// Remove USER.
    Delete { user: String },
    /// Print the usernames, one per line (never the hashes).
    List,
    /// Check USER's password: exit 0 if it matches, 1 if not.
    Verify {
        user: String,
        /// Read the password as one line from standard input instead.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Copy users from a Mosquitto password file ($7$ PBKDF2-SHA512 or $6$ SHA-512 hashes) as they
    /// are; mqttd re-hashes each to argon2id on that user's next successful login.
    Import {
        /// The Mosquitto password file (already hashed: run `mosquitto_passwd -U` on plain text).
        mosquitto_file: PathBuf,
        /// Overwrite users that already exist (they are reported and skipped otherwise).
        #[arg(long)]
        force: bool,
    },
    /// Without USER: list users whose hash is legacy ($7$/$6$) or weaker than the
    /// --m-cost/--t-cost/--p-cost options. Hashes cannot be upgraded without the password, so the broker re-hashes them on
    /// each user's next successful login. With USER: re-hash that user now; their current
    /// password must be given (prompt or --password-stdin) and must match.
    Rehash {
        user: Option<String>,
        /// Read USER's password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Manage API keys for the broker's HTTP API (`[http] api_keys`): `Authorization: Bearer
    /// <key>`. A key is shown once, when it is made; the file keeps only its SHA-256.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Make a key called NAME and print it (once). The broker picks it up on reload (SIGHUP).
    /// Publishes made with it go out as username NAME, so the ACL's rules for NAME apply.
    Add {
        name: String,
        /// admin (everything), viewer (read only) or publisher (publish only).
        #[arg(long)]
        role: mqttd::auth::apikeys::Role,
        #[command(flatten)]
        keys: KeysFile,
    },
    /// Print each key's name and role (never the keys).
    List {
        #[command(flatten)]
        keys: KeysFile,
    },
    /// Remove the key called NAME (requests with it are refused after the broker's next reload).
    Remove {
        name: String,
        #[command(flatten)]
        keys: KeysFile,
    },
}

#[derive(Args)]
struct KeysFile {
    /// The API key file. Default: `api_keys` next to the password file (--file), i.e.
    /// config/api_keys. Created (mode 0600) by `add` if missing.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
}

impl KeysFile {
    fn path(&self, password_file: &Path) -> PathBuf {
        self.keys.clone().unwrap_or_else(|| {
            password_file
                .parent()
                .unwrap_or(Path::new("."))
                .join("api_keys")
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mqtt-passwd: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let params = Argon2Params {
        m_cost: cli.cost.m_cost,
        t_cost: cli.cost.t_cost,
        p_cost: cli.cost.p_cost,
    };
    params
        .validate()
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let file = cli.file.as_path();
    match cli.command {
        Command::ApiKey(command) => api_key(file, command)?,
        Command::Add {
            user,
            password_stdin,
            scram,
            scram_iterations,
        } => {
            validate_username(&user)?;
            let password = new_password(password_stdin)?;
            let hash = hash_argon2id(password.as_bytes(), params)?;
            let scram = scram
                .then(|| ScramCredentials::generate(password.as_bytes(), scram_iterations))
                .transpose()?;
            let created = PasswordFile::update::<_, PasswdError>(file, true, |f| {
                Ok((f.set_with_scram(&user, hash, scram)?, true))
            })?;
            let verb = if created { "added" } else { "updated" };
            println!("{verb} user {user} in {}", file.display());
        }
        Command::Delete { user } => {
            let removed = PasswordFile::update::<_, PasswdError>(file, false, |f| {
                let removed = f.remove(&user);
                Ok((removed, removed))
            })?;
            if !removed {
                bail!("no user {user:?} in {}", file.display());
            }
            println!("deleted user {user} from {}", file.display());
        }
        Command::List => {
            for e in PasswordFile::load(file)?.entries() {
                println!("{}", e.username);
            }
        }
        Command::Verify {
            user,
            password_stdin,
        } => {
            let pf = PasswordFile::load(file)?;
            let password = existing_password(password_stdin, &user)?;
            match pf.get(&user) {
                Some(e) if e.verify(password.as_bytes()) => println!("password matches"),
                _ => {
                    eprintln!("password does not match (or no such user)");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Import {
            mosquitto_file,
            force,
        } => import(file, &mosquitto_file, force)?,
        Command::Rehash {
            user: None,
            password_stdin: _,
        } => {
            let pf = PasswordFile::load(file)?;
            let stale: Vec<_> = pf
                .entries()
                .filter(|e| needs_rehash(&e.hash, params))
                .collect();
            if stale.is_empty() {
                println!(
                    "all users have argon2id hashes at least as strong as m={} t={} p={}",
                    params.m_cost, params.t_cost, params.p_cost
                );
            } else {
                println!(
                    "users still on legacy or weaker hashes (re-hashed by the broker on their next login, or now with `rehash USER`):"
                );
                for e in stale {
                    println!("{}\t{}", e.username, e.hash.kind());
                }
            }
        }
        Command::Rehash {
            user: Some(user),
            password_stdin,
        } => {
            let password = existing_password(password_stdin, &user)?;
            let current = PasswordFile::load(file)?;
            let Some(entry) = current.get(&user) else {
                bail!("no user {user:?} in {}", file.display());
            };
            if !entry.verify(password.as_bytes()) {
                eprintln!("password does not match; {user} not re-hashed");
                return Ok(ExitCode::from(1));
            }
            let old = entry.hash.clone();
            let hash = hash_argon2id(password.as_bytes(), params)?;
            PasswordFile::update(file, false, |f| {
                // Only replace the hash we verified: a concurrent password change wins.
                match f.get(&user) {
                    Some(e) if e.hash == old => {
                        f.set_keeping_scram(&user, hash);
                        Ok(((), true))
                    }
                    _ => Err(anyhow::anyhow!(
                        "{user}'s entry changed meanwhile; not re-hashed"
                    )),
                }
            })?;
            println!("re-hashed user {user} with argon2id");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn api_key(password_file: &Path, command: ApiKeyCommand) -> anyhow::Result<()> {
    use mqttd::auth::apikeys::ApiKeyFile;
    match command {
        ApiKeyCommand::Add { name, role, keys } => {
            let path = keys.path(password_file);
            let new = ApiKeyFile::update(&path, true, |f| Ok((f.add(&name, role)?, true)))?;
            println!("{}", new.key.as_str());
            eprintln!(
                "added API key {name} ({}) to {}; it is shown only now: keep it safe. The broker \
                 picks it up on reload (SIGHUP).",
                role.name(),
                path.display()
            );
        }
        ApiKeyCommand::List { keys } => {
            for e in ApiKeyFile::load(&keys.path(password_file))?.entries() {
                println!("{}\t{}", e.name, e.role.name());
            }
        }
        ApiKeyCommand::Remove { name, keys } => {
            let path = keys.path(password_file);
            let removed = ApiKeyFile::update(&path, false, |f| {
                let removed = f.remove(&name);
                Ok((removed, removed))
            })?;
            if !removed {
                bail!("no API key {name:?} in {}", path.display());
            }
            println!("removed API key {name} from {}", path.display());
        }
    }
    Ok(())
}

fn import(file: &Path, from: &Path, force: bool) -> anyhow::Result<()> {
    let source = PasswordFile::load(from)
        .with_context(|| format!("reading Mosquitto password file {}", from.display()))?;
    let (added, replaced, skipped) = PasswordFile::update::<_, PasswdError>(file, true, |f| {
        let (mut added, mut replaced, mut skipped) = (0, 0, Vec::new());
        for e in source.entries() {
            if f.get(&e.username).is_some() {
                if !force {
                    skipped.push(e.username.clone());
                    continue;
                }
                replaced += 1;
            } else {
                added += 1;
            }
            f.set(&e.username, e.hash.clone())?;
        }
        let changed = added + replaced > 0;
        Ok(((added, replaced, skipped), changed))
    })?;
    for user in &skipped {
        eprintln!("skipped existing user {user} (use --force to overwrite)");
    }
    println!(
        "imported {added} new and {replaced} replaced user(s) into {}; {} skipped",
        file.display(),
        skipped.len()
    );
    Ok(())
}

/// Reads one line from stdin, without its line ending.
fn stdin_password() -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let len = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(len);
    Ok(line)
}

fn prompt(text: &str) -> anyhow::Result<Zeroizing<String>> {
    Ok(Zeroizing::new(
        rpassword::prompt_password(text).context("reading the password from the terminal")?,
    ))
}

/// A new password: from stdin, or prompted twice; empty or mismatched entries are refused.
fn new_password(from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    let password = if from_stdin {
        stdin_password()?
    } else {
        let first = prompt("Password: ")?;
        let second = prompt("Reenter password: ")?;
        if first != second {
            bail!("passwords do not match");
        }
        first
    };
    if password.is_empty() {
        bail!("empty passwords are not allowed");
    }
    Ok(password)
}

fn existing_password(from_stdin: bool, user: &str) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin {
        stdin_password()
    } else {
        prompt(&format!("Password for {user}: "))
    }
}
