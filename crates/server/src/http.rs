//! `[[listen.http]]`: the operator's HTTP/1.1 listener (docs/operations.md). Every listener
//! serves `/health` (the process answers) and `/ready` (the store answers); a listener with a
//! `mongoose_prometheus_handler` serves the metrics in Prometheus' text format, and one with a
//! `mongoose_admin_api` serves the admin API (JSON, bearer token):
//!
//! | method and path (under the API's path) | what it does |
//! |---|---|
//! | `GET /users/JID/push` | the user's push registrations, secrets masked, with their last success and error |
//! | `DELETE /users/JID/push[?node=N]` | disable one registration, or all |
//! | `POST /users/JID/push/test[?node=N]` | send a test push and return the app server's answer |
//! | `GET /users/JID/sessions` | the user's sessions |
//! | `DELETE /users/JID/sessions[?resource=R]` | close one session, or all |
//! | `DELETE /users/JID` | remove the account, closing its sessions |
//!
//! Errors are JSON too: `{"error": "..."}` with 400 (a bad JID or path), 401 (no or a wrong
//! token), 404 (no such user, registration or session), 405, 503 (the store is unreachable).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_core::{Server, sessions::Availability};
use herald_push::Push;
use herald_stream::StreamErrorCondition;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use jid::BareJid;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{AdminApi, HttpListener};

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What every HTTP listener serves from.
pub struct HttpState {
    /// The server.
    pub server: Arc<Server>,
    /// The push module, when on.
    pub push: Option<Arc<Push>>,
    /// The metrics, when recorded for Prometheus.
    pub metrics: Option<PrometheusHandle>,
}

/// A bound HTTP listener, ready to run.
pub struct BoundHttp {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Arc<Routes>,
}

struct Routes {
    state: Arc<HttpState>,
    prometheus: Option<String>,
    admin: Option<AdminApi>,
}

impl BoundHttp {
    /// Bind `config`'s address (TLS loaded by the caller).
    pub async fn bind(
        config: &HttpListener,
        tls: Option<TlsAcceptor>,
        state: Arc<HttpState>,
    ) -> std::io::Result<BoundHttp> {
        let listener = TcpListener::bind(config.addr).await?;
        Ok(BoundHttp {
            listener,
            tls,
            routes: Arc::new(Routes {
                state,
                prometheus: config.prometheus.clone(),
                admin: config.admin.clone(),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept until the server shuts down; each connection on a task of the server's.
    pub async fn run(self) {
        let shutdown = self.routes.state.server.shutdown.clone();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "http: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let routes = Arc::clone(&self.routes);
            let tls = self.tls.clone();
            let shutdown = shutdown.clone();
            self.routes.state.server.tasks.spawn(async move {
                let served = async {
                    match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => serve(stream, routes).await,
                            Err(error) => {
                                tracing::debug!(%peer, %error, "http: TLS handshake failed")
                            }
                        },
                        None => serve(stream, routes).await,
                    }
                };
                tokio::select! {
                    () = served => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }
}

async fn serve<S>(stream: S, routes: Arc<Routes>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let routes = Arc::clone(&routes);
        async move { Ok::<_, Infallible>(routes.handle(request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "http: connection ended with an error");
    }
}

type Reply = Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    text(status, "application/json", body.to_string())
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json_reply(status, &json!({ "error": message.into() }))
}

/// Seconds since the epoch, for JSON.
fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The value of `name` in a query string (`a=1&b=2`), percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key)? == name)
            .then(|| percent_decode(value))
            .flatten()
    })
}

/// Percent-decoded UTF-8 (`+` stays a plus: nodes are often base64).
fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

impl Routes {
    async fn handle(&self, request: Request<Incoming>) -> Reply {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().map(str::to_owned);
        let method = request.method().clone();
        match path.as_str() {
            "/health" => return text(StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/ready" => return self.ready().await,
            _ => {}
        }
        if self.prometheus.as_deref() == Some(path.as_str()) {
            return match &self.state.metrics {
                Some(handle) => text(StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
                None => error(StatusCode::NOT_FOUND, "metrics are not recorded"),
            };
        }
        if let Some(admin) = &self.admin
            && let Some(rest) = path.strip_prefix(admin.path.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            if !authorized(&request, &admin.token) {
                let mut reply = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
                reply.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
                return reply;
            }
            return self.admin(&method, rest, query.as_deref()).await;
        }
        error(StatusCode::NOT_FOUND, format!("nothing at {path}"))
    }

    async fn ready(&self) -> Reply {
        // Any read answers whether the store is reachable.
        let probe = BareJid::new("ready-probe@localhost").expect("a valid JID");
        match self.state.server.storage.accounts().exists(&probe).await {
            Ok(_) => text(StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Err(error) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("store unreachable: {error}\n"),
            ),
        }
    }

    async fn admin(&self, method: &Method, rest: &str, query: Option<&str>) -> Reply {
        let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let ["users", user, tail @ ..] = parts.as_slice() else {
            return error(StatusCode::NOT_FOUND, "expected /users/JID/...");
        };
        let Some(user) = percent_decode(user) else {
            return error(
                StatusCode::BAD_REQUEST,
                "the JID is not valid percent-encoded UTF-8",
            );
        };
        let user = match BareJid::new(&user) {
            Ok(user) if user.node().is_some() => user,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{user:?} is not an account JID (user@domain)"),
                );
            }
        };
        let server = &self.state.server;
        if !server.is_local_domain(user.domain().as_str()) {
            return error(
                StatusCode::NOT_FOUND,
                format!("{} is not served here", user.domain()),
            );
        }
        match (method, tail) {
            (&Method::DELETE, []) => self.remove_user(&user).await,
            (&Method::GET, ["sessions"]) => self.sessions(&user),
            (&Method::DELETE, ["sessions"]) => self.kick(&user, query_param(query, "resource")),
            (&Method::GET, ["push"]) => self.push_list(&user).await,
            (&Method::DELETE, ["push"]) => {
                self.push_disable(&user, query_param(query, "node")).await
            }
            (&Method::POST, ["push", "test"]) => {
                self.push_test(&user, query_param(query, "node")).await
            }
            (_, [] | ["sessions"] | ["push"] | ["push", "test"]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not served here"),
            ),
            _ => error(StatusCode::NOT_FOUND, "no such admin resource"),
        }
    }

    async fn remove_user(&self, user: &BareJid) -> Reply {
        match self.state.server.remove_account(user).await {
            Ok(true) => json_reply(StatusCode::OK, &json!({ "removed": user.to_string() })),
            Ok(false) => error(StatusCode::NOT_FOUND, format!("{user} does not exist")),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    fn sessions(&self, user: &BareJid) -> Reply {
        let sessions: Vec<Value> = self
            .state
            .server
            .sessions
            .resources(user)
            .into_iter()
            .map(|resource| {
                let priority = match &resource.availability {
                    Availability::Available { priority, .. } => Some(*priority),
                    Availability::Unavailable => None,
                };
                json!({
                    "jid": resource.handle.jid.to_string(),
                    "resource": resource.handle.jid.resource().as_str(),
                    "available": priority.is_some(),
                    "priority": priority,
                })
            })
            .collect();
        json_reply(StatusCode::OK, &json!({ "sessions": sessions }))
    }

    fn kick(&self, user: &BareJid, resource: Option<String>) -> Reply {
        let mut kicked = Vec::new();
        for session in self.state.server.sessions.resources(user) {
            let jid = &session.handle.jid;
            if resource
                .as_deref()
                .is_some_and(|r| r != jid.resource().as_str())
            {
                continue;
            }
            // RFC 6120 section 4.9.3.14: the administrator ended the session.
            session
                .handle
                .control
                .close(StreamErrorCondition::PolicyViolation);
            kicked.push(jid.to_string());
        }
        if kicked.is_empty() {
            return error(StatusCode::NOT_FOUND, format!("{user} has no such session"));
        }
        tracing::info!(%user, count = kicked.len(), "sessions closed by the admin API");
        json_reply(StatusCode::OK, &json!({ "kicked": kicked }))
    }

    fn push(&self) -> Result<&Arc<Push>, Box<Reply>> {
        self.state
            .push
            .as_ref()
            .ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, "the push module is not on")))
    }

    async fn push_list(&self, user: &BareJid) -> Reply {
        let push = match self.push() {
            Ok(push) => push,
            Err(reply) => return *reply,
        };
        match push.registrations_of(user).await {
            Ok(registrations) => {
                let list: Vec<Value> = registrations
                    .into_iter()
                    .map(|r| {
                        let form: serde_json::Map<String, Value> =
                            r.form.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                        json!({
                            "pubsub": r.pubsub.to_string(),
                            // The node is shown whole: the operator names it to disable or test it.
                            "node": r.node,
                            "form": form,
                            "created": unix(r.created),
                            "last_success": r.last.success.map(unix),
                            "last_error": r.last.error.map(|(at, answer)| json!({ "at": unix(at), "answer": answer })),
                        })
                    })
                    .collect();
                json_reply(StatusCode::OK, &json!({ "registrations": list }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    async fn push_disable(&self, user: &BareJid, node: Option<String>) -> Reply {
        let push = match self.push() {
            Ok(push) => push,
            Err(reply) => return *reply,
        };
        match push
            .disable_for(&self.state.server, user, node.as_deref())
            .await
        {
            Ok(disabled) if disabled.is_empty() => error(
                StatusCode::NOT_FOUND,
                format!("{user} has no such push registration"),
            ),
            Ok(disabled) => {
                tracing::info!(%user, count = disabled.len(), "push registrations disabled by the admin API");
                json_reply(StatusCode::OK, &json!({ "disabled": disabled.len() }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    async fn push_test(&self, user: &BareJid, node: Option<String>) -> Reply {
        use herald_push::admin::TestPushError;
        let push = match self.push() {
            Ok(push) => push,
            Err(reply) => return *reply,
        };
        match push.test_push(user, node.as_deref()).await {
            Ok(report) => json_reply(
                StatusCode::OK,
                &json!({
                    "request_id": report.request.to_string(),
                    "outcome": report.outcome.as_str(),
                    "answer": report.answer,
                }),
            ),
            Err(TestPushError::NoRegistration) => error(
                StatusCode::NOT_FOUND,
                format!("{user} has no such push registration"),
            ),
            Err(TestPushError::Store(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Err(e) => error(StatusCode::CONFLICT, e.to_string()),
        }
    }
}

/// Whether the request carries `Authorization: Bearer TOKEN`, compared in constant time.
fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(given) = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(
            query_param(Some("node=a%2Fb&x=1"), "node").as_deref(),
            Some("a/b")
        );
        assert_eq!(query_param(Some("x=1"), "node"), None);
        assert_eq!(query_param(None, "node"), None);
        assert_eq!(
            query_param(Some("node=a+b%2B"), "node").as_deref(),
            Some("a+b+")
        );
        assert_eq!(query_param(Some("node=%C3%28"), "node"), None, "not UTF-8");
    }
}
