//! mqtt-certs: a development certificate authority for mqttd.
//!
//! `init` makes a CA and a server certificate for this machine; `client NAME` issues a client
//! certificate for mutual TLS (its CN is NAME, which `use_identity_as_username` turns into the
//! MQTT username). Meant for development and test set-ups, not as a production PKI.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Create development TLS certificates for mqttd.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a CA (ca.pem, ca.key) and a server certificate signed by it (server.pem, server.key).
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Extra host name or IP address for the server certificate; repeatable.
        /// localhost, 127.0.0.1 and ::1 are always included.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// RSA 2048 keys instead of ECDSA P-256 (for old clients).
        #[arg(long)]
        rsa: bool,
        /// Validity of the server certificate in days (the CA lives at least ten years).
        #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue NAME.pem / NAME.key for mutual TLS, signed by the CA in --dir.
    Client {
        /// Certificate CN (and file name); letters, digits, '.', '_', '-', '@'.
        name: String,
        /// Directory holding ca.pem and ca.key; the client files are written there too.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// RSA 2048 key instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// Validity in days.
        #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// How long a fresh CA is valid at minimum.
const CA_MIN_DAYS: u32 = 3650;

/// One file to write: certificates are public (0644), keys private (0600).
struct Output {
    path: PathBuf,
    contents: String,
    mode: u32,
    what: String,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the whole cause chain on one line, no backtrace even with RUST_BACKTRACE set.
            eprintln!("mqtt-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            dir,
            hosts,
            rsa,
            days,
            force,
        } => init(&dir, &hosts, rsa, days, force),
        Command::Client {
            name,
            dir,
            rsa,
            days,
            force,
        } => client(&name, &dir, rsa, days, force),
    }
}

fn init(dir: &Path, extra_hosts: &[String], rsa: bool, days: u32, force: bool) -> Result<()> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    for host in extra_hosts {
        let host = check_host(host)?;
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    let now = OffsetDateTime::now_utc();
    let algorithm = if rsa { "RSA 2048" } else { "ECDSA P-256" };

    let ca_key = new_key(rsa)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name(&[
        (DnType::OrganizationName, "mqttd"),
        (DnType::CommonName, "mqttd development CA"),
    ]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params, now, days.max(CA_MIN_DAYS));
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot create the CA certificate")?;
    let ca_until = ca_params.not_after.date();

    let server_key = new_key(rsa)?;
    let mut server_params = CertificateParams::new(hosts.clone())
        .context("invalid host name for the server certificate")?;
    // The CN is informational (clients match the SANs); name the first extra host if there is one.
    let cn = extra_hosts.first().map_or("localhost", String::as_str);
    server_params.distinguished_name = name(&[
        (DnType::OrganizationName, "mqttd"),
        (DnType::CommonName, cn),
    ]);
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if rsa {
        // Lets old TLS clients use RSA key exchange; harmless otherwise.
        server_params
            .key_usages
            .push(KeyUsagePurpose::KeyEncipherment);
    }
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    set_validity(&mut server_params, now, days);
    let issuer = Issuer::new(ca_params, ca_key);
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .context("cannot sign the server certificate")?;
    let server_until = server_params.not_after.date();

    let outputs = [
        Output {
            path: dir.join("ca.pem"),
            contents: ca_cert.pem(),
            mode: 0o644,
            what: format!(
                "CA certificate ({algorithm}, valid until {ca_until}); clients trust this"
            ),
        },
        Output {
            path: dir.join("ca.key"),
            contents: issuer.key().serialize_pem(),
            mode: 0o600,
            what: "CA private key; keep it private, `mqtt-certs client` signs with it".into(),
        },
        Output {
            path: dir.join("server.pem"),
            contents: server_cert.pem(),
            mode: 0o644,
            what: format!(
                "server certificate ({algorithm}, valid until {server_until}) for {}",
                hosts.join(", ")
            ),
        },
        Output {
            path: dir.join("server.key"),
            contents: server_key.serialize_pem(),
            mode: 0o600,
            what: "server private key".into(),
        },
    ];
    write_all(dir, &outputs, force)?;
    println!();
    println!("In the mqttd config, on a [[listener]]:");
    println!(
        "  tls = {{ cert = {:?}, key = {:?} }}",
        dir.join("server.pem"),
        dir.join("server.key")
    );
    Ok(())
}

fn client(cn: &str, dir: &Path, rsa: bool, days: u32, force: bool) -> Result<()> {
    check_client_name(cn)?;
    let ca_pem_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let ca_pem = std::fs::read_to_string(&ca_pem_path).with_context(|| {
        format!(
            "{}: cannot read the CA certificate (run `mqtt-certs init` first)",
            ca_pem_path.display()
        )
    })?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .with_context(|| format!("{}: cannot read the CA key", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("{}: not a usable private key", ca_key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{}: not a usable CA certificate", ca_pem_path.display()))?;

    let key = new_key(rsa)?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .context("cannot prepare the client certificate")?;
    params.distinguished_name = name(&[
        (DnType::OrganizationName, "mqttd"),
        (DnType::CommonName, cn),
    ]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, OffsetDateTime::now_utc(), days);
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the client certificate")?;
    let until = params.not_after.date();

    let outputs = [
        Output {
            path: dir.join(format!("{cn}.pem")),
            contents: cert.pem(),
            mode: 0o644,
            what: format!("client certificate CN={cn} (valid until {until})"),
        },
        Output {
            path: dir.join(format!("{cn}.key")),
            contents: key.serialize_pem(),
            mode: 0o600,
            what: "client private key".into(),
        },
    ];
    write_all(dir, &outputs, force)
}

fn new_key(rsa: bool) -> Result<KeyPair> {
    let alg = if rsa {
        &rcgen::PKCS_RSA_SHA256
    } else {
        &rcgen::PKCS_ECDSA_P256_SHA256
    };
    KeyPair::generate_for(alg).context("cannot generate a key pair")
}

fn name(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in parts {
        dn.push(ty.clone(), *value);
    }
    dn
}

/// Valid from a day ago (tolerates clock skew between machines) for `days` days from now.
fn set_validity(params: &mut CertificateParams, now: OffsetDateTime, days: u32) {
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(i64::from(days));
}

/// An IP address, or a DNS name made of letters, digits, '-' and '.' (a leading "*." is allowed).
fn check_host(host: &str) -> Result<String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        bail!("--host {host:?}: not an IP address or DNS name");
    }
    Ok(host.to_ascii_lowercase())
}

/// The name becomes a file name and a CN: keep it to a safe alphabet and away from the CA and
/// server files.
fn check_client_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if !ok {
        bail!(
            "client name {name:?}: use 1-64 letters, digits, '.', '_', '-' or '@', not starting with '.'"
        );
    }
    if name == "ca" || name == "server" {
        bail!("client name {name:?} would overwrite the CA or server files");
    }
    Ok(())
}

/// Refuses (before writing anything) if a file exists and `force` is off; then writes each file
/// through a temporary file and a rename, so a key is never visible with looser permissions and an
/// interrupted run leaves no half-written file.
fn write_all(dir: &Path, outputs: &[Output], force: bool) -> Result<()> {
    if !force {
        let existing: Vec<String> = outputs
            .iter()
            .filter(|o| o.path.exists())
            .map(|o| o.path.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "refusing to overwrite {} (use --force to replace)",
                existing.join(", ")
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    for output in outputs {
        write_file(&output.path, output.contents.as_bytes(), output.mode)?;
        println!("wrote {}  {}", output.path.display(), output.what);
    }
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    Ok(())
}
