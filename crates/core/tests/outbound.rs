//! Outbound IQs through the real router: a component registered in-process answers them.

use std::{sync::Arc, time::Duration};

use herald_core::{
    Origin, Server,
    components::{ComponentHandle, ConflictBehaviour},
    outbound::{IqOutcome, SendIqError},
};
use herald_storage::Storage;
use herald_stream::stanza::{Stanza, set_attr};
use jid::{DomainPart, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

async fn server() -> Arc<Server> {
    let storage = Storage::open_sqlite_in_memory().await.unwrap();
    let host = DomainPart::new("example.com").unwrap().into_owned();
    Server::new(vec![host], storage, &[])
}

/// Connect a fake component for `domain`; returns what it receives.
fn component(server: &Server, domain: &str) -> (ComponentHandle, herald_core::queue::Inbox) {
    let (handle, rx) = ComponentHandle::new(Jid::new(domain).unwrap(), true);
    server
        .components
        .register(handle.clone(), ConflictBehaviour::Disconnect)
        .unwrap();
    (handle, rx)
}

fn ping(to: &str) -> Element {
    let mut iq = Element::bare("iq", "jabber:client");
    set_attr(&mut iq, "type", "get");
    set_attr(&mut iq, "to", to);
    iq.append_child(Element::bare("ping", "urn:xmpp:ping"));
    iq
}

/// The component's answer to `request`, `from` the given JID.
fn answer(request: &Element, from: &str, error: Option<(&str, &str)>) -> Stanza {
    let mut reply = Element::bare("iq", "jabber:client");
    set_attr(&mut reply, "id", request.attr("id").unwrap());
    set_attr(&mut reply, "to", request.attr("from").unwrap());
    set_attr(&mut reply, "from", from);
    match error {
        None => set_attr(&mut reply, "type", "result"),
        Some((type_, condition)) => {
            set_attr(&mut reply, "type", "error");
            let mut error = Element::bare("error", "jabber:client");
            set_attr(&mut error, "type", type_);
            error.append_child(Element::bare(
                condition,
                "urn:ietf:params:xml:ns:xmpp-stanzas",
            ));
            reply.append_child(error);
        }
    }
    Stanza::parse(reply).unwrap()
}

async fn reply_once(
    server: Arc<Server>,
    mut rx: herald_core::queue::Inbox,
    from: &'static str,
    error: Option<(&'static str, &'static str)>,
) {
    let request = rx.recv().await.unwrap().stanza;
    let domain = Jid::new("push.example.net").unwrap();
    server
        .route(Origin::Component(&domain), answer(&request, from, error))
        .await;
}

#[tokio::test]
async fn a_result_resolves_the_iq() {
    let server = server().await;
    let (_handle, rx) = component(&server, "push.example.net");
    tokio::spawn(reply_once(server.clone(), rx, "push.example.net", None));
    let outcome = server
        .send_iq(ping("push.example.net"), Duration::from_secs(5))
        .await
        .unwrap();
    let IqOutcome::Result(reply) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(reply.attr("from"), Some("push.example.net"));
    assert!(server.outbound.is_empty());
}

#[tokio::test]
async fn the_iq_comes_from_the_server_domain_with_an_unguessable_id() {
    let server = server().await;
    let (_handle, mut rx) = component(&server, "push.example.net");
    let s = server.clone();
    let waiting = tokio::spawn(async move {
        s.send_iq(ping("push.example.net"), Duration::from_secs(1))
            .await
    });
    let request = rx.recv().await.unwrap().stanza;
    assert_eq!(request.attr("from"), Some("example.com"));
    assert!(
        request.attr("id").unwrap().len() >= 22,
        "128 bits of randomness"
    );
    drop(waiting);
}

#[tokio::test]
async fn errors_of_each_type_carry_their_type_and_condition() {
    for (type_, condition, expected_type, expected_condition) in [
        (
            "cancel",
            "item-not-found",
            ErrorType::Cancel,
            DefinedCondition::ItemNotFound,
        ),
        (
            "wait",
            "resource-constraint",
            ErrorType::Wait,
            DefinedCondition::ResourceConstraint,
        ),
        (
            "modify",
            "bad-request",
            ErrorType::Modify,
            DefinedCondition::BadRequest,
        ),
        (
            "auth",
            "forbidden",
            ErrorType::Auth,
            DefinedCondition::Forbidden,
        ),
        (
            "continue",
            "undefined-condition",
            ErrorType::Continue,
            DefinedCondition::UndefinedCondition,
        ),
    ] {
        let server = server().await;
        let (_handle, rx) = component(&server, "push.example.net");
        tokio::spawn(reply_once(
            server.clone(),
            rx,
            "push.example.net",
            Some((type_, condition)),
        ));
        let outcome = server
            .send_iq(ping("push.example.net"), Duration::from_secs(5))
            .await
            .unwrap();
        let IqOutcome::Error {
            type_: got_type,
            condition: got_condition,
            ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            (got_type, got_condition),
            (expected_type, expected_condition),
            "{type_}"
        );
    }
}

#[tokio::test]
async fn no_reply_times_out_and_leaves_nothing_pending() {
    let server = server().await;
    tokio::time::pause();
    let (_handle, _rx) = component(&server, "push.example.net");
    let outcome = server
        .send_iq(ping("push.example.net"), Duration::from_secs(32))
        .await
        .unwrap();
    assert_eq!(outcome, IqOutcome::Timeout);
    assert!(server.outbound.is_empty());
}

#[tokio::test]
async fn a_reply_from_another_jid_is_ignored() {
    let server = server().await;
    tokio::time::pause();
    let (_handle, mut rx) = component(&server, "push.example.net");
    let s = server.clone();
    let task = tokio::spawn(async move {
        let request = rx.recv().await.unwrap().stanza;
        let domain = Jid::new("push.example.net").unwrap();
        // An impostor at another JID of the component's domain answers first...
        s.route(
            Origin::Component(&domain),
            answer(&request, "evil.push.example.net", None),
        )
        .await;
        s.route(
            Origin::Component(&domain),
            answer(&request, "someone@push.example.net", None),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // ...then the real one.
        s.route(
            Origin::Component(&domain),
            answer(&request, "push.example.net", Some(("cancel", "conflict"))),
        )
        .await;
    });
    let outcome = server
        .send_iq(ping("push.example.net"), Duration::from_secs(32))
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            IqOutcome::Error {
                condition: DefinedCondition::Conflict,
                ..
            }
        ),
        "{outcome:?}"
    );
    task.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_domain_answers_remote_server_not_found_at_once() {
    let server = server().await;
    let outcome = server
        .send_iq(ping("push.elsewhere.test"), Duration::from_secs(30))
        .await
        .unwrap();
    let IqOutcome::Error {
        type_, condition, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (type_, condition),
        (ErrorType::Cancel, DefinedCondition::RemoteServerNotFound)
    );
}

#[tokio::test]
async fn a_disconnected_component_answers_wait_service_unavailable() {
    let server = server().await;
    let (handle, rx) = component(&server, "push.example.net");
    drop(rx);
    server.components.unregister(&handle.domain, handle.id);
    let outcome = server
        .send_iq(ping("push.example.net"), Duration::from_secs(30))
        .await
        .unwrap();
    let IqOutcome::Error {
        type_, condition, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (type_, condition),
        (ErrorType::Wait, DefinedCondition::ServiceUnavailable)
    );
}

#[tokio::test]
async fn iqs_that_are_not_get_or_set_or_from_elsewhere_are_refused() {
    let server = server().await;
    let mut iq = ping("push.example.net");
    set_attr(&mut iq, "type", "result");
    assert!(matches!(
        server.send_iq(iq, Duration::from_secs(1)).await,
        Err(SendIqError::Invalid(_))
    ));
    let mut iq = ping("push.example.net");
    set_attr(&mut iq, "from", "other.test");
    assert_eq!(
        server.send_iq(iq, Duration::from_secs(1)).await,
        Err(SendIqError::NotLocal)
    );
}

#[tokio::test]
async fn ten_thousand_concurrent_iqs_are_each_answered_correctly() {
    let server = server().await;
    let (_handle, mut rx) = component(&server, "push.example.net");
    let s = server.clone();
    // The component answers each request with a result naming the request's node, so a
    // mixed-up reply would be noticed.
    let responder = tokio::spawn(async move {
        let domain = Jid::new("push.example.net").unwrap();
        for _ in 0..10_000 {
            let request = rx.recv().await.unwrap().stanza;
            let mut reply = answer(&request, "push.example.net", None);
            let tag = request
                .get_child("ping", "urn:xmpp:ping")
                .unwrap()
                .attr("node")
                .unwrap()
                .to_owned();
            let mut echo = Element::bare("echo", "urn:example");
            set_attr(&mut echo, "node", tag);
            reply.element.append_child(echo);
            s.route(Origin::Component(&domain), reply).await;
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..10_000u32 {
        let server = server.clone();
        tasks.spawn(async move {
            let mut iq = ping("push.example.net");
            let mut payload = Element::bare("ping", "urn:xmpp:ping");
            set_attr(&mut payload, "node", n.to_string());
            iq.take_nodes();
            iq.append_child(payload);
            let outcome = server.send_iq(iq, Duration::from_secs(60)).await.unwrap();
            let IqOutcome::Result(reply) = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(
                reply.get_child("echo", "urn:example").unwrap().attr("node"),
                Some(n.to_string().as_str())
            );
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    responder.await.unwrap();
    assert!(server.outbound.is_empty());
}

#[tokio::test]
async fn a_caller_that_stops_waiting_leaves_nothing_pending() {
    let server = server().await;
    let (_handle, _rx) = component(&server, "push.example.net");
    let s = server.clone();
    let waiting = tokio::spawn(async move {
        s.send_iq(ping("push.example.net"), Duration::from_secs(60))
            .await
    });
    while server.outbound.is_empty() {
        tokio::task::yield_now().await;
    }
    waiting.abort();
    let _ = waiting.await;
    assert!(server.outbound.is_empty());
}
