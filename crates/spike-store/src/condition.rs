//! Evaluating a [`Condition`] against what a tier holds (RFC 9110 §13.1.1 `If-Match` and
//! §13.1.2 `If-None-Match: *`).

use crate::{Condition, ETag, Key, StoreError};

impl Condition {
    /// Whether a write may proceed on `key` when the entry there now has ETag `current` (`None`:
    /// absent). `IfMatch` needs an entry with exactly that ETag; `IfAbsent` needs no entry.
    /// Errors: [`StoreError::PreconditionFailed`] carrying `current`.
    pub fn check(&self, key: &Key, current: Option<&ETag>) -> Result<(), StoreError> {
        let holds = match self {
            Condition::None => true,
            Condition::IfMatch(expected) => current == Some(expected),
            Condition::IfAbsent => current.is_none(),
        };
        if holds {
            Ok(())
        } else {
            Err(StoreError::PreconditionFailed {
                key: key.to_string(),
                current: current.cloned(),
            })
        }
    }

    /// The condition as [`crate::Tier::delete`] reads it: `IfAbsent` means nothing there.
    pub fn for_delete(&self) -> &Condition {
        match self {
            Condition::IfAbsent => &Condition::None,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_hold_only_for_their_state() -> Result<(), StoreError> {
        let key = Key::kv("ns", "k")?;
        let (a, b) = (ETag::of(b"a"), ETag::of(b"b"));
        assert!(Condition::None.check(&key, None).is_ok());
        assert!(Condition::None.check(&key, Some(&a)).is_ok());
        assert!(Condition::IfAbsent.check(&key, None).is_ok());
        assert!(Condition::IfMatch(a.clone()).check(&key, Some(&a)).is_ok());
        match Condition::IfMatch(a.clone()).check(&key, Some(&b)) {
            Err(StoreError::PreconditionFailed { key: k, current }) => {
                assert_eq!((k.as_str(), current), ("ns/k", Some(b.clone())));
            }
            other => panic!("expected PreconditionFailed, got {other:?}"),
        }
        assert!(matches!(
            Condition::IfMatch(a.clone()).check(&key, None),
            Err(StoreError::PreconditionFailed { current: None, .. })
        ));
        assert!(matches!(
            Condition::IfAbsent.check(&key, Some(&b)),
            Err(StoreError::PreconditionFailed {
                current: Some(_),
                ..
            })
        ));
        assert_eq!(Condition::IfAbsent.for_delete(), &Condition::None);
        Ok(())
    }
}
