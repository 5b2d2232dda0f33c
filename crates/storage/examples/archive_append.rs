//! What writing the push benchmark's archive rows costs the storage layer alone: 1,000
//! recipients and 20 senders with accounts, each message one row that both archives keep (as
//! `herald-core`'s archive queues a message between two local accounts), appended in batches
//! as the archive's writer does, on the embedded SQLite files in a temporary directory.
//! Prints the process's CPU time per message (every thread: the tokio workers and SQLite's).
//!
//!     cargo run --release -p herald-storage --example archive_append -- [MESSAGES] [BATCH] [--no-check]
//!
//! `BATCH` is in messages; `--no-check` appends without the account check
//! (`only_accounts` false), to see what that check costs.

use std::time::Instant;

use herald_storage::Storage;
use herald_storage::archive::{ArchiveQuery, ArchivedMessage, Kept, next_id};
use jid::BareJid;

/// The CPU time of this process so far, in seconds (Linux: `/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("a process name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    (ticks(11) + ticks(12)) / 100.0
}

fn jid(text: &str) -> BareJid {
    BareJid::new(text).expect("a valid JID")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = !args.iter().any(|arg| arg == "--no-check");
    let mut numbers = args.iter().filter(|arg| !arg.starts_with("--"));
    let messages: usize = numbers
        .next()
        .map_or(20_000, |n| n.parse().expect("MESSAGES"));
    let batch: usize = numbers.next().map_or(1_000, |n| n.parse().expect("BATCH"));

    let directory = tempfile::tempdir().expect("a temporary directory");
    let storage = Storage::open_sqlite(&directory.path().join("herald.db"))
        .await
        .expect("the database");
    let credentials =
        herald_sasl::Credentials::from_password("password", 4096).expect("credentials");
    let names = (0..1000)
        .map(|r| format!("bench{r}@localhost"))
        .chain((0..20).map(|s| format!("sender{s}@localhost")));
    for name in names {
        storage
            .accounts()
            .create(&jid(&name), &credentials)
            .await
            .expect("an account");
    }

    let mut rows = Vec::with_capacity(messages);
    for m in 0..messages {
        let (r, s) = ((m * 7919) % 1000, m % 20);
        let recipient = jid(&format!("bench{r}@localhost"));
        let sender = jid(&format!("sender{s}@localhost"));
        let id = next_id();
        let body = format!("Hello, this is message number {m} of the bench");
        let text = format!(
            "<message xmlns=\"jabber:client\" to=\"{recipient}\" from=\"{sender}/r\" \
             type=\"chat\" id=\"abcdefgh-{m}\"><body>{body}</body><origin-id \
             xmlns=\"urn:xmpp:sid:0\" id=\"0a1b2c3d-{m}\"/><stanza-id xmlns=\"urn:xmpp:sid:0\" \
             id=\"{id}\" by=\"{recipient}\"/></message>"
        );
        rows.push(ArchivedMessage {
            id,
            sender: sender.clone(),
            sender_resource: "r".to_owned(),
            recipient: recipient.clone(),
            recipient_resource: String::new(),
            kept: Kept::Both,
            origin_id: Some(format!("0a1b2c3d-{m}")),
            body,
            message: text.into(),
        });
    }

    let archive = storage.archive();
    let (started, before) = (Instant::now(), cpu_seconds());
    let mut rest = rows;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(batch));
        archive.append(rest, check).await.expect("an append");
        rest = tail;
    }
    let spent = cpu_seconds() - before;
    let elapsed = started.elapsed();

    let sender = jid("sender0@localhost");
    let stored = archive
        .query(&sender, &ArchiveQuery::all(1))
        .await
        .expect("a query")
        .count;
    assert_eq!(stored as usize, messages.div_ceil(20), "sender0's rows");
    println!(
        "{messages} messages, {batch} a batch, account check {}: {:.1} us of CPU per message, \
         {:.2} s",
        if check { "on" } else { "off" },
        spent * 1e6 / messages as f64,
        elapsed.as_secs_f64()
    );
    storage.close().await;
}
