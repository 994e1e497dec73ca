//! The bundled `schema` filter on a route, with the DataBrew (Blink) YAML file of the seed
//! brought as is: valid rows reach the sink byte for byte, broken ones go to the dead-letter
//! sink with their reasons, the client hears every problem, counters agree, and an edited
//! schema file applies without a restart.

mod common;

use common::*;

const BLINK: &str = r#"service:
  id: 123
  stream_schema:
    - stream: taxi_rides # this is the name of the stream. You can have only one stream for WebSocket connector
      columns:
        - name: log_id
          databrewType: Int32
          nativeConnectorType: integer
          pk: true
          nullable: false
        - name: timestamp
          databrewType: String
          nativeConnectorType: varchar
          pk: false
          nullable: true
        - name: driver_id
          databrewType: Int32
          nativeConnectorType: numeric
          pk: false
          nullable: false
"#;

fn config() -> String {
    format!(
        r#"{head}
[sinks.rides]
type = "file"
path = "rides.jsonl"
fsync = "always"

[sinks.rejected]
type = "file"
path = "rejected.jsonl"
fsync = "always"

[routes.rides]
path = "/rides"
filters = [{{ module = "schema", config_file = "filters/blink.yaml", config = {{ extra_columns = "reject", dead_letter = "rejected" }} }}]
sinks = ["rides"]
emit_sinks = ["rejected"]
"#,
        head = head("")
    )
}

#[tokio::test]
async fn broken_rows_go_to_the_dead_letter_sink_with_reasons() {
    let proxy = Proxy::start(&config(), &["schema"], &[("blink.yaml", BLINK.as_bytes())]);
    let mut ws = proxy.connect("/rides").await;
    let valid = [
        r#"{"log_id": 1, "timestamp": "2024-05-01T10:00:00Z", "driver_id": 7}"#,
        r#"{"driver_id":8,"log_id":2,"timestamp":null}"#,
        r#"[{"log_id": 3, "driver_id": 9}, {"log_id": 4, "driver_id": 10}]"#,
    ];
    let broken = [
        (r#"{"timestamp": "x", "driver_id": 1}"#, "pk_missing", "log_id"),
        (r#"{"log_id": "five", "driver_id": 1}"#, "wrong_type", "log_id"),
        (r#"{"log_id": 5, "driver_id": 4294967296}"#, "out_of_range", "driver_id"),
        (r#"{"log_id": 6, "driver_id": null}"#, "null", "driver_id"),
        (r#"{"log_id": 7, "driver_id": 1, "surge": 2}"#, "extra", "surge"),
        (r#"not json"#, "not_json", ""),
    ];
    for (row, reason, column) in broken {
        send_text(&mut ws, row).await;
        let answer: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(answer["error"], "schema");
        assert_eq!(answer["stream"], "taxi_rides");
        assert_eq!(answer["violations"][0]["reason"], reason, "{row}: {answer}");
        assert_eq!(answer["violations"][0]["column"], column, "{row}: {answer}");
    }
    for row in valid {
        send_text(&mut ws, row).await;
    }

    eventually("every row is in its file", || async {
        proxy.json_lines("rides.jsonl").len() == valid.len() && proxy.json_lines("rejected.jsonl").len() == broken.len()
    })
    .await;
    let passed: Vec<String> = proxy
        .json_lines("rides.jsonl")
        .iter()
        .map(|l| l["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(passed, valid, "valid rows pass byte for byte");
    for (line, (row, reason, column)) in proxy.json_lines("rejected.jsonl").iter().zip(broken) {
        assert_eq!(line["payload"], row);
        let reasons: serde_json::Value =
            serde_json::from_str(line["headers"]["framegate-schema-errors"].as_str().unwrap()).unwrap();
        assert_eq!(
            (reasons[0]["reason"].as_str(), reasons[0]["column"].as_str()),
            (Some(reason), Some(column))
        );
    }
    for (_, reason, column) in broken {
        // Counters are named by the schema's columns: an extra key, which a client names, is `*`.
        let column = if reason == "extra" { "*" } else { column };
        let series = format!("framegate_filter_custom_total{{filter=\"schema\",name=\"{reason}:{column}\"}}");
        assert_eq!(proxy.metric(&series).await, 1.0, "{series}");
    }

    // The schema file changes: `timestamp` becomes required, and the next row without it is refused.
    let stricter = BLINK.replacen(
        "pk: false\n          nullable: true",
        "pk: false\n          nullable: false",
        1,
    );
    proxy.replace_file("filters/blink.yaml", stricter.as_bytes());
    eventually("the edited schema applies", || async {
        let mut probe = proxy.connect("/rides").await;
        send_text(&mut probe, r#"{"log_id": 9, "driver_id": 1, "timestamp": null}"#).await;
        tokio::time::timeout(std::time::Duration::from_millis(500), next_text(&mut probe))
            .await
            .is_ok_and(|answer| answer.contains(r#""reason":"null","expected":"String""#))
    })
    .await;
}
