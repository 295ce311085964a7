//! `meshrpc ca init`, `meshrpc cert issue`, `meshrpc cert show`: a cluster CA and node
//! certificates whose URI SANs name the cluster tag, the node and the services it may
//! serve (docs/security.md). Keys are ECDSA P-256, generated with rcgen.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use meshrpc::tls::{CA_FILE, CERT_FILE, GOSSIP_KEY_FILE, KEY_FILE, NODE_DNS_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The CA's private key file (keep it off the nodes).
pub(crate) const CA_KEY_FILE: &str = "ca.key";
const CA_NAME_PREFIX: &str = "meshrpc cluster CA: ";

/// Cluster CA commands.
#[derive(clap::Subcommand)]
pub(crate) enum CaCommand {
    /// Create a cluster CA (ca.pem, ca.key) and the cluster's gossip key (gossip.key).
    ///
    /// Example: meshrpc ca init --dir ./ca --tag prod
    Init {
        /// Directory to write to (created; existing CA files are not overwritten).
        #[arg(long)]
        dir: PathBuf,
        /// The cluster tag the CA issues for (as `--tag` of nodes).
        #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "example")]
        tag: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
}

/// Node certificate commands.
#[derive(clap::Subcommand)]
pub(crate) enum CertCommand {
    /// Issue a certificate: OUT gets ca.pem, node.pem, node.key (and gossip.key for a
    /// node), ready for --tls-dir. A node (--node) serves and gossips; a caller
    /// (--caller: the CLI, tools) only calls, and reaches the cluster through a node's
    /// mesh port: it gets no gossip key.
    ///
    /// Example: meshrpc cert issue --ca ./ca --node greeter-1 --service greeter --out ./greeter-1
    ///
    /// Example: meshrpc cert issue --ca ./ca --caller ops --out ./ops
    Issue(IssueArgs),
    /// Issue an HTTPS server certificate for a gateway, signed by the cluster CA: OUT gets
    /// https.pem, https.key and ca.pem (what clients trust: `curl --cacert OUT/ca.pem`).
    /// Use a public certificate instead when browsers must trust the gateway.
    ///
    /// Example: meshrpc cert https --ca ./ca --name localhost --name api.example.com --out ./https
    Https {
        /// The CA directory (from `meshrpc ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// Host names (or IP addresses) clients reach the gateway by. Repeatable.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Directory to write to (created).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Show who a certificate is for, what it may serve and when it expires.
    ///
    /// Example: meshrpc cert show ./greeter-1/node.pem
    Show {
        /// A PEM certificate.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What a node certificate says.
#[derive(clap::Args)]
pub(crate) struct IssueArgs {
    /// The CA directory (from `meshrpc ca init`).
    #[arg(long)]
    pub ca: PathBuf,
    /// The node's name (a node gets the cluster's gossip key).
    #[arg(long, required_unless_present = "caller", conflicts_with = "caller")]
    pub node: Option<String>,
    /// A caller-only identity's name (no gossip key, no services).
    #[arg(long, conflicts_with = "service")]
    pub caller: Option<String>,
    /// Services the node may serve (comma separated; none for a node that only calls,
    /// such as a gateway).
    #[arg(long, value_delimiter = ',')]
    pub service: Vec<String>,
    /// Directory to write to (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Start of validity (RFC 3339), default now: for testing expired or future certs.
    #[arg(long)]
    pub valid_from: Option<String>,
}

pub(crate) fn ca(command: CaCommand) -> Result<()> {
    let CaCommand::Init { dir, tag, days } = command;
    if tag.is_empty() || tag.contains(['/', ' ']) {
        return Err(format!("tag `{tag}`: must be non-empty, without `/` or spaces").into());
    }
    fs::create_dir_all(&dir)?;
    for f in [CA_FILE, CA_KEY_FILE] {
        if dir.join(f).exists() {
            return Err(format!("{} exists: not overwriting a CA", dir.join(f).display()).into());
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("{CA_NAME_PREFIX}{tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days.into());
    let cert = params.self_signed(&key)?;
    fs::write(dir.join(CA_FILE), cert.pem())?;
    write_secret(&dir.join(CA_KEY_FILE), &key.serialize_pem())?;
    if !dir.join(GOSSIP_KEY_FILE).exists() {
        let secret: [u8; 32] = rand_bytes()?;
        write_secret(&dir.join(GOSSIP_KEY_FILE), &format!("{}\n", hex(&secret)))?;
    }
    println!(
        "CA for cluster `{tag}` in {}: {CA_FILE}, {CA_KEY_FILE} (keep it secret), {GOSSIP_KEY_FILE}",
        dir.display()
    );
    Ok(())
}

pub(crate) fn cert(command: CertCommand) -> Result<()> {
    match command {
        CertCommand::Issue(args) => issue(args),
        CertCommand::Https { ca, names, out, days } => https(&ca, &names, &out, days),
        CertCommand::Show { file, json } => show(&file, json),
    }
}

pub(crate) fn issue(args: IssueArgs) -> Result<()> {
    let ca_pem =
        fs::read_to_string(args.ca.join(CA_FILE)).map_err(|e| format!("{}: {e}", args.ca.join(CA_FILE).display()))?;
    let ca_key = KeyPair::from_pem(&fs::read_to_string(args.ca.join(CA_KEY_FILE))?)?;
    let tag = ca_tag(&ca_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let (node, is_node) = match (&args.node, &args.caller) {
        (Some(node), None) => (node.as_str(), true),
        (None, Some(caller)) => (caller.as_str(), false),
        _ => return Err("say --node NAME (a node) or --caller NAME (calls only)".into()),
    };
    if node.is_empty() || node.contains(['/', ' ']) {
        return Err(format!("name `{node}`: must be non-empty, without `/` or spaces").into());
    }
    let services: Vec<String> = args.service.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(node);
    params.subject_alt_names = vec![SanType::DnsName(NODE_DNS_NAME.try_into()?)];
    for uri in meshrpc::identity::Identity::uris(&tag, node, &services) {
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // A node is both: it serves calls and makes them.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let from = match &args.valid_from {
        Some(at) => OffsetDateTime::parse(at, &Rfc3339).map_err(|e| format!("--valid-from `{at}`: {e}"))?,
        None => OffsetDateTime::now_utc() - time::Duration::minutes(5),
    };
    params.not_before = from;
    params.not_after = from + time::Duration::days(args.days.into());
    let cert = params.signed_by(&key, &issuer)?;
    fs::create_dir_all(&args.out)?;
    // The key first: a reloading node picks the pair up when the certificate changes.
    write_secret(&args.out.join(KEY_FILE), &key.serialize_pem())?;
    fs::write(args.out.join(CERT_FILE), cert.pem())?;
    if args.out.canonicalize()? != args.ca.canonicalize()? {
        fs::write(args.out.join(CA_FILE), &ca_pem)?;
        // The gossip key is the nodes' alone: a caller that held it could forge membership.
        let gossip_key = args.out.join(GOSSIP_KEY_FILE);
        match fs::read_to_string(args.ca.join(GOSSIP_KEY_FILE)) {
            Ok(gossip) if is_node => write_secret(&gossip_key, &gossip)?,
            _ if gossip_key.exists() => fs::remove_file(&gossip_key)?,
            _ => {}
        }
    }
    let what = if is_node { format!("node `{node}`") } else { format!("caller `{node}` (no gossip key)") };
    println!(
        "{}: {what} of cluster `{tag}`, may serve [{}], valid until {}",
        args.out.display(),
        services.join(", "),
        params.not_after.format(&Rfc3339)?
    );
    Ok(())
}

/// The file names `meshrpc cert https` writes.
pub(crate) const HTTPS_CERT_FILE: &str = "https.pem";
/// See [`HTTPS_CERT_FILE`].
pub(crate) const HTTPS_KEY_FILE: &str = "https.key";

fn https(ca: &Path, names: &[String], out: &Path, days: u32) -> Result<()> {
    let ca_pem = fs::read_to_string(ca.join(CA_FILE)).map_err(|e| format!("{}: {e}", ca.join(CA_FILE).display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&fs::read_to_string(ca.join(CA_KEY_FILE))?)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&names[0]);
    for host in names {
        params.subject_alt_names.push(match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.as_str().try_into()?),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days.into());
    let cert = params.signed_by(&key, &issuer)?;
    fs::create_dir_all(out)?;
    write_secret(&out.join(HTTPS_KEY_FILE), &key.serialize_pem())?;
    fs::write(out.join(HTTPS_CERT_FILE), cert.pem())?;
    fs::write(out.join(CA_FILE), &ca_pem)?;
    println!(
        "{}: HTTPS certificate for {}, valid until {}",
        out.display(),
        names.join(", "),
        params.not_after.format(&Rfc3339)?
    );
    Ok(())
}

fn show(file: &Path, json: bool) -> Result<()> {
    let pem = fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("{}: not a PEM certificate: {e}", file.display()))?;
    let der = &parsed.contents;
    let identity = meshrpc::tls::identity_of(der).map_err(|e| format!("{}: {e}", file.display()))?;
    let cert = parsed.parse_x509()?;
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    let now = SystemTime::now();
    let expires_in = identity.expires_in(now).unwrap_or_default();
    let fingerprint = meshrpc::tls::fingerprint(der);
    if json {
        let v = serde_json::json!({
            "node": identity.node,
            "tag": identity.tag,
            "services": identity.services,
            "not_before": not_before.format(&Rfc3339)?,
            "not_after": not_after.format(&Rfc3339)?,
            "expired": expires_in.is_zero(),
            "expires_in_secs": expires_in.as_secs(),
            "issuer": cert.issuer().to_string(),
            "fingerprint": fingerprint,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("node      {}", identity.node);
    println!("cluster   {}", identity.tag);
    println!(
        "services  {}",
        if identity.services.is_empty() { "(none: calls only)".into() } else { identity.services.join(", ") }
    );
    println!("valid     {} .. {}", not_before.format(&Rfc3339)?, not_after.format(&Rfc3339)?);
    if expires_in.is_zero() {
        println!("expiry    EXPIRED");
    } else {
        println!("expiry    in {}", human(expires_in));
    }
    println!("issuer    {}", cert.issuer());
    println!("sha256    {fingerprint}");
    Ok(())
}

/// "3d 4h", "5h 2m", "42s".
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        86_400.. => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        3600.. => format!("{}h {}m", s / 3600, s % 3600 / 60),
        60.. => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{s}s"),
    }
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn
}

fn ca_tag(ca_pem: &str) -> Result<String> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| format!("CA: {e}"))?;
    let cert = parsed.parse_x509()?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default();
    cn.strip_prefix(CA_NAME_PREFIX).map(str::to_owned).ok_or_else(|| {
        format!("the CA's name `{cn}` is not `{CA_NAME_PREFIX}<tag>`: not made by `meshrpc ca init`").into()
    })
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}

fn rand_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
