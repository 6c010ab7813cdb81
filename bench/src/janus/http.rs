//! `janus::http`: the transport under the Janus API client — one pooled hyper HTTP/1 client that
//! POSTs JSON requests and GETs (long-polls) JSON answers below the API's base URL, each exchange
//! with a deadline, every failure as a typed [`JanusError`]. Nothing here knows Janus's message
//! types; `janus::session` does.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

use super::error::JanusError;

/// How long an idle pooled connection is kept. Below libmicrohttpd's idle timeouts, so a request
/// does not race the server closing the connection under it.
const POOL_IDLE: Duration = Duration::from_secs(20);

/// The HTTP side of the Janus API at one base URL (`http://IP:PORT/janus`).
#[derive(Clone, Debug)]
pub(crate) struct ApiHttp {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl ApiHttp {
    /// A client for the API at `base` (plain `http://`, no trailing slash needed).
    pub(crate) fn new(base: &str) -> Result<Self, JanusError> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: hyper::Uri =
            base.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| JanusError::BadUrl {
                    url: base.clone(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(JanusError::BadUrl {
                url: base,
                reason: "expected http://HOST:PORT/PATH".into(),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self { client, base })
    }

    /// The base URL, as given without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// POSTs `body` as JSON to `base + path` and returns the JSON answer.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, JanusError> {
        let url = format!("{}{path}", self.base);
        let payload = Bytes::from(serde_json::to_vec(body).expect("a JSON value serialises"));
        let request = hyper::Request::post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| JanusError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        self.exchange("POST", url, request, timeout).await
    }

    /// GETs `base + path` (path may carry a query) and returns the JSON answer.
    pub(crate) async fn get(&self, path: &str, timeout: Duration) -> Result<Value, JanusError> {
        let url = format!("{}{path}", self.base);
        let request = hyper::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| JanusError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        self.exchange("GET", url, request, timeout).await
    }

    async fn exchange(
        &self,
        method: &'static str,
        url: String,
        request: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Value, JanusError> {
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| JanusError::Transport {
                        method,
                        url: url.clone(),
                        source,
                    })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|source| JanusError::Body {
                    method,
                    url: url.clone(),
                    source,
                })?
                .to_bytes();
            Ok::<_, JanusError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| JanusError::Timeout {
                method,
                url: url.clone(),
                timeout,
            })??;
        if status != hyper::StatusCode::OK {
            return Err(JanusError::Status {
                method,
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| JanusError::Json {
            method,
            url,
            body: String::from_utf8_lossy(&body).into_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_http_base_urls_only() {
        let api = ApiHttp::new("http://10.99.1.2:8088/janus/").unwrap();
        assert_eq!(api.base(), "http://10.99.1.2:8088/janus");
        assert!(matches!(
            ApiHttp::new("https://10.99.1.2:8089/janus"),
            Err(JanusError::BadUrl { .. })
        ));
        assert!(matches!(
            ApiHttp::new("not a url"),
            Err(JanusError::BadUrl { .. })
        ));
    }
}
