//! `mqtt-gateway policy explain --config FILE (--principal P [--group G]... | --token JWT)
//! --client-id C (--publish T | --subscribe F | --receive T | --connect)`: the decision and the
//! rule (file:line) that made it, computed by the same code that enforces it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use mqtt_gateway::config::Config;
use mqtt_gateway::policy::{Action, ClientFacts};
use mqtt_gateway::server;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["publish", "subscribe", "receive", "connect"])))]
pub(super) struct ExplainArgs {
    /// The gateway configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The authenticated principal (omit with --anonymous).
    #[arg(long)]
    principal: Option<String>,
    /// The MQTT client id.
    #[arg(long = "client-id", default_value = "")]
    client_id: String,
    /// Organizational units of the client certificate.
    #[arg(long = "cert-ou")]
    cert_ou: Vec<String>,
    /// The listener the client came in on (default: the first one).
    #[arg(long)]
    listener: Option<String>,
    /// The client address.
    #[arg(long, default_value = "127.0.0.1")]
    source: IpAddr,
    /// A client let in by allow_anonymous.
    #[arg(long)]
    anonymous: bool,
    /// A group the client's token claims (auth.token.groups_claim); repeat for several.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// A device token: verified against auth.token's key set now, its principal and groups used.
    #[arg(long, conflicts_with_all = ["principal", "groups", "anonymous"])]
    token: Option<String>,
    /// Judge a PUBLISH to this topic.
    #[arg(long)]
    publish: Option<String>,
    /// Judge a SUBSCRIBE to this filter ($share/<group>/<filter> is judged by <filter>, the prefix
    /// taken off once).
    #[arg(long)]
    subscribe: Option<String>,
    /// Judge the delivery of a message on this topic.
    #[arg(long)]
    receive: Option<String>,
    /// Judge the CONNECT (the client id against the connect rules).
    #[arg(long)]
    connect: bool,
}

pub(super) fn explain(a: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = Arc::new(Config::load(&a.config)?);
    let snap = server::load_snapshot(Arc::clone(&config), 0)?;
    let listener = a
        .listener
        .clone()
        .or_else(|| config.listeners.first().map(|l| l.name.clone()))
        .unwrap_or_default();
    let mut principal = a.principal.clone();
    let mut groups = a.groups.clone();
    if let Some(token) = &a.token {
        let (Some(rules), Some(keys)) = (config.auth.token.as_ref(), snap.tokens.as_deref()) else {
            anyhow::bail!("--token: the configuration has no [auth.token]");
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let t = mqtt_gateway::auth::token::verify(keys, rules, token.trim().as_bytes(), now)
            .map_err(|f| anyhow::anyhow!("--token refused: {}", f.as_str()))?;
        println!("token: principal {:?}, groups {:?}", t.principal, t.groups);
        principal = Some(t.principal);
        groups = t.groups;
    }
    let facts = ClientFacts {
        principal: principal.as_deref(),
        client_id: &a.client_id,
        cert_ous: &a.cert_ou,
        listener: &listener,
        source: a.source.to_canonical(),
        anonymous: a.anonymous,
        groups: &groups,
    };
    let (action, topic): (Action, String) = if let Some(t) = &a.publish {
        (Action::Publish, t.clone())
    } else if let Some(f) = &a.subscribe {
        // Validated here for a clear error; judged as sent (the policy takes a `$share/<group>/`
        // prefix off once, as the gateway does for a SUBSCRIBE).
        mqtt_inspect::TopicFilter::new(f).map_err(|e| anyhow::anyhow!("{f:?}: {e}"))?;
        (Action::Subscribe, f.clone())
    } else if let Some(t) = &a.receive {
        (Action::Receive, t.clone())
    } else {
        (Action::Connect, a.client_id.clone())
    };
    let decision = snap.policy.explain(&facts, action, &topic);
    let verdict = if decision.allowed { "allow" } else { "deny" };
    // For a shared subscription, the filter that was judged too.
    let judged = match mqtt_inspect::TopicFilter::new(&topic)
        .ok()
        .and_then(|f| f.shared())
    {
        Some((group, inner)) if action == Action::Subscribe => {
            format!(" (group {group:?}, filter {:?})", inner.as_str())
        }
        _ => String::new(),
    };
    match &decision.rule {
        Some(rule) => println!(
            "{verdict}: {} {topic:?}{judged} by the rule at {rule}",
            action.as_str()
        ),
        None => println!(
            "{verdict}: {} {topic:?}{judged}: no rule matches (default deny)",
            action.as_str()
        ),
    }
    Ok(if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
