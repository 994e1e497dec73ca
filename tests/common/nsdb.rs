//! NSDb live-query messages for the query filter's tests.

use serde_json::{Value, json};

use super::{Ws, next_text, send_text};

/// Sends one JSON message and reads the JSON answer.
pub async fn ask(ws: &mut Ws, message: &Value) -> Value {
    send_text(ws, &message.to_string()).await;
    serde_json::from_str(&next_text(ws).await).unwrap()
}

/// A live query's subscription message.
pub fn subscription(metric: &str, query: &str) -> Value {
    json!({"db": "db", "namespace": "ns", "metric": metric, "queryString": query})
}
