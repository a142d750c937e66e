//! [`SharedStr`]: immutable text that many values share without copying it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

/// Immutable text, cheap to clone, that can be a part of a larger shared text: the
/// partition keys of the user records [`deaggregate`](crate::aggregation::deaggregate)
/// returns from one aggregate all live in one allocation, and each record's key is a view
/// of it. Cloning one costs a reference count increment.
///
/// Derefs to `str`, and compares, orders and hashes as its text (so it can stand for a
/// `&str` key in maps).
///
/// ```
/// use kinesis_common::SharedStr;
///
/// let key = SharedStr::from("user-17");
/// assert_eq!(key, "user-17");
/// assert_eq!(key.len(), 7);
/// assert_eq!(format!("{key}"), "user-17");
/// ```
#[derive(Clone)]
pub struct SharedStr {
    text: Arc<str>,
    /// Byte range of the text in `text`, on character boundaries.
    start: usize,
    end: usize,
}

impl SharedStr {
    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text[self.start..self.end]
    }

    /// The part `range` of `text`. The caller guarantees that `range` lies in `text` on
    /// character boundaries (checked in debug builds; a violation would panic on access,
    /// never read outside the text).
    #[inline]
    pub(crate) fn part(text: &Arc<str>, range: Range<usize>) -> Self {
        debug_assert!(text.get(range.clone()).is_some(), "{range:?} is not a part of the text");
        Self { text: Arc::clone(text), start: range.start, end: range.end }
    }
}

impl Deref for SharedStr {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SharedStr {
    fn from(text: &str) -> Self {
        Self::from(Arc::<str>::from(text))
    }
}

impl From<String> for SharedStr {
    fn from(text: String) -> Self {
        Self::from(Arc::<str>::from(text))
    }
}

impl From<Arc<str>> for SharedStr {
    fn from(text: Arc<str>) -> Self {
        let end = text.len();
        Self { text, start: 0, end }
    }
}

impl From<SharedStr> for String {
    fn from(text: SharedStr) -> Self {
        text.as_str().to_owned()
    }
}

impl Default for SharedStr {
    fn default() -> Self {
        Self::from("")
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for SharedStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<SharedStr> for str {
    fn eq(&self, other: &SharedStr) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<SharedStr> for &str {
    fn eq(&self, other: &SharedStr) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<SharedStr> for String {
    fn eq(&self, other: &SharedStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedStr {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for SharedStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn parts_of_one_text_behave_as_their_own_text() {
        let text: Arc<str> = Arc::from("alphaßbeta");
        let alpha = SharedStr::part(&text, 0..5);
        let eszett = SharedStr::part(&text, 5..7);
        let beta = SharedStr::part(&text, 7..11);
        assert_eq!((&*alpha, &*eszett, &*beta), ("alpha", "ß", "beta"));
        assert_eq!(alpha, SharedStr::from("alpha"));
        assert_eq!(format!("{beta} {beta:?}"), "beta \"beta\"");
        assert!(alpha < beta);
        let mut map = HashMap::new();
        map.insert(beta.clone(), 1);
        assert_eq!(map.get("beta"), Some(&1));
        assert_eq!(String::from(eszett), "ß");
        assert_eq!(SharedStr::default(), "");
    }
}
