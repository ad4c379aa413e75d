//! The connection to the server: [`Server`] sends requests carrying the
//! token, opens WebSockets over the same TLS settings, and turns refusals
//! into a [`ClientError`]; with it, reading a JSON answer and downloading a
//! job's result.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{ClientError, ServerArg};
use crate::tls;

/// A connection to the server: its base URL, an HTTP client and the TLS
/// settings of its WebSockets, and the token sent with every request.
pub(super) struct Server {
    base: String,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

impl Server {
    pub(super) fn new(arg: &ServerArg) -> Result<Self, ClientError> {
        let tls = tls::client(arg.ca.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(Arc::unwrap_or_clone(tls.clone()))
            .build()?;
        Ok(Self {
            base: arg.server.trim_end_matches('/').to_owned(),
            http,
            tls,
            token: arg.token.clone(),
        })
    }

    /// Returns a request to `path` (`/jobs/…`), carrying the token.
    pub(super) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Opens the WebSocket at `path`, carrying the token as a header.
    pub(super) async fn websocket(
        &self,
        path: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::Error,
    > {
        let base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let mut request = format!("{base}{path}").into_client_request()?;
        if let Some(token) = &self.token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(tokio_tungstenite::tungstenite::http::Error::from)?;
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let (stream, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await?;
        Ok(stream)
    }

    /// Returns the error of an answer with `status`: a 401 says what to do
    /// about the token.
    pub(super) fn refusal(&self, status: StatusCode, body: &Value) -> ClientError {
        if status == StatusCode::UNAUTHORIZED {
            return ClientError::Unauthorized {
                token_given: self.token.is_some(),
            };
        }
        server_error(status.as_u16(), body)
    }
}

pub(super) async fn download(server: &Server, id: &str, output: &Path) -> Result<(), ClientError> {
    let response = server
        .request(reqwest::Method::GET, &format!("/jobs/{id}/result"))
        .send()
        .await?;
    if !response.status().is_success() {
        let code = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        return Err(server.refusal(code, &body));
    }
    let write_err = |source| ClientError::Write {
        path: output.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::create(output).await.map_err(write_err)?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?)
            .await
            .map_err(write_err)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(write_err)
}

pub(super) async fn expect_json(
    server: &Server,
    response: reqwest::Response,
) -> Result<Value, ClientError> {
    let code = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if code.is_success() {
        Ok(body)
    } else {
        Err(server.refusal(code, &body))
    }
}

fn server_error(status: u16, body: &Value) -> ClientError {
    ClientError::Server {
        status,
        message: body["error"]["message"]
            .as_str()
            .unwrap_or("no error message")
            .to_owned(),
    }
}
