//! Which records of a batch must run one after the other: a FIFO queue's group, in order. On a
//! standard queue every record stands alone (its records may carry a `MessageGroupId` too, for fair
//! queues, which promise no order).

use std::collections::BTreeMap;

use aws_lambda_events::sqs::SqsMessage;

use crate::sqs::QueueKind;

/// Indexes of records grouped for ordering, in the batch's order.
pub fn ordering_groups(records: &[SqsMessage], queue: QueueKind) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_group: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, record) in records.iter().enumerate() {
        let group = record
            .attributes
            .get("MessageGroupId")
            .filter(|_| queue.is_fifo());
        match group {
            Some(group) => match by_group.get(group.as_str()) {
                Some(&g) => groups[g].push(index),
                None => {
                    by_group.insert(group, groups.len());
                    groups.push(vec![index]);
                }
            },
            None => groups.push(vec![index]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(group: Option<&str>) -> SqsMessage {
        let mut r = SqsMessage::default();
        if let Some(g) = group {
            r.attributes.insert("MessageGroupId".into(), g.into());
        }
        r
    }

    #[test]
    fn fifo_records_are_grouped_in_order_and_others_stand_alone() {
        let records = [
            record(Some("a")),
            record(None),
            record(Some("b")),
            record(Some("a")),
        ];
        assert_eq!(
            ordering_groups(&records, QueueKind::Fifo),
            vec![vec![0, 3], vec![1], vec![2]]
        );
        assert_eq!(
            ordering_groups(&records, QueueKind::Standard),
            vec![vec![0], vec![1], vec![2], vec![3]],
            "a fair queue's groups promise no order"
        );
    }
}
