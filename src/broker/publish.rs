//! `payrelay publish FILE|-`: pushes invoices to the queue with confirms, the
//! way a biller's system would.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};

use super::{connect, declare_topology, timed, BrokerError};
use crate::config::BrokerConfig;

/// One message of `payrelay publish`'s input and the line it starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub number: usize,
    pub body: &'a str,
}

/// Splits input into messages: one JSON object (possibly over many lines),
/// or JSON lines.
pub fn split_messages(input: &str) -> Vec<Line<'_>> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if serde_json::from_str::<serde_json::Value>(trimmed).is_ok() {
        let number = input[..input.len() - input.trim_start().len()].matches('\n').count() + 1;
        return vec![Line { number, body: trimmed }];
    }
    input
        .lines()
        .enumerate()
        .map(|(i, l)| Line {
            number: i + 1,
            body: l.trim(),
        })
        .filter(|l| !l.body.is_empty())
        .collect()
}

/// Publishes each message persistently and waits for every confirm.
/// Returns how many the broker confirmed.
pub async fn publish(config: &BrokerConfig, messages: &[&str]) -> Result<usize, BrokerError> {
    let connection = connect(config).await?;
    let channel = timed(connection.create_channel()).await?;
    declare_topology(&channel, config).await?;
    timed(channel.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut confirms = Vec::with_capacity(messages.len());
    for (i, body) in messages.iter().enumerate() {
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(format!(
                "publish-{}-{i}",
                crate::domain::ids::random_id()
            )));
        let confirm = timed(channel.basic_publish(
            "".into(),
            config.queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body.as_bytes(),
            properties,
        ))
        .await?;
        confirms.push(confirm);
    }
    let mut confirmed = 0;
    for (i, confirm) in confirms.into_iter().enumerate() {
        match timed(confirm).await? {
            Confirmation::Ack(None) => confirmed += 1,
            other => {
                return Err(BrokerError::Other(format!(
                    "message {} was not accepted by the broker ({other:?}); {confirmed} before it were",
                    i + 1
                )))
            }
        }
    }
    let _ = connection.close(200, "published".into()).await;
    Ok(confirmed)
}

#[cfg(test)]
mod tests {
    use super::split_messages;

    #[test]
    fn one_object_or_json_lines() {
        assert_eq!(split_messages("{\n \"a\": 1\n}\n").len(), 1);
        assert_eq!(split_messages("\n\n{\n \"a\": 1\n}\n")[0].number, 3);
        let lines = split_messages("{\"a\":1}\n\n{\"a\":2}\nnot json\n");
        assert_eq!(lines.iter().map(|l| l.number).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(lines[2].body, "not json");
        assert!(split_messages("  \n").is_empty());
    }
}
