//! The input and output vocabulary shared by every analysis: outcomes, battles, intervals.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A model's name in a battle: shared, so that ten million battles of 120 models hold 120 strings,
/// not twenty million (the battles readers intern names; [`Battle::new`] makes a fresh one).
/// Compares, hashes and orders as its text; reads as `&str` through `Deref` and [`ModelName::as_str`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName(Arc<str>);

impl ModelName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for ModelName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ModelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ModelName {
    fn from(name: &str) -> ModelName {
        ModelName(Arc::from(name))
    }
}

impl From<String> for ModelName {
    fn from(name: String) -> ModelName {
        ModelName(Arc::from(name))
    }
}

impl From<&String> for ModelName {
    fn from(name: &String) -> ModelName {
        ModelName(Arc::from(name.as_str()))
    }
}

impl From<&ModelName> for ModelName {
    fn from(name: &ModelName) -> ModelName {
        name.clone()
    }
}

impl PartialEq<str> for ModelName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ModelName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for ModelName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for ModelName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ModelName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ModelName, D::Error> {
        String::deserialize(deserializer).map(ModelName::from)
    }
}

/// What a rater decided about one comparison of model A (shown first in the record) against model B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    AWins,
    BWins,
    /// Both responses judged equally good.
    Tie,
    /// Both responses judged bad; for ratings this counts as a tie, as in Chatbot Arena.
    BothBad,
}

impl Outcome {
    /// The score of model A with ties counted as half a win (the Chatbot Arena convention).
    pub fn score_a(self) -> f64 {
        match self {
            Outcome::AWins => 1.0,
            Outcome::BWins => 0.0,
            Outcome::Tie | Outcome::BothBad => 0.5,
        }
    }

    /// The same outcome seen from the other side.
    pub fn swapped(self) -> Outcome {
        match self {
            Outcome::AWins => Outcome::BWins,
            Outcome::BWins => Outcome::AWins,
            other => other,
        }
    }

    pub fn is_tie(self) -> bool {
        matches!(self, Outcome::Tie | Outcome::BothBad)
    }
}

/// Surface features of one response used by style control (as in Chatbot Arena's style control):
/// how long it is and how much markdown decoration it carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StyleFeatures {
    /// Length in Unicode scalar values (characters).
    pub length: u32,
    /// Markdown headers (`#` to `######` at the start of a line).
    pub headers: u32,
    /// Markdown list items (ordered or unordered).
    pub lists: u32,
    /// Bold spans (`**…**` or `__…__`).
    pub bold: u32,
}

impl StyleFeatures {
    /// The features in a fixed order, matching [`STYLE_FEATURE_NAMES`].
    pub fn as_array(&self) -> [f64; 4] {
        [
            f64::from(self.length),
            f64::from(self.headers),
            f64::from(self.lists),
            f64::from(self.bold),
        ]
    }
}

/// Names of the style covariates, in the order of [`StyleFeatures::as_array`].
pub const STYLE_FEATURE_NAMES: [&str; 4] = ["length", "headers", "lists", "bold"];

/// Style features of both responses of a battle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BattleStyle {
    pub a: StyleFeatures,
    pub b: StyleFeatures,
}

/// One vote between two models, identified by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Battle {
    pub model_a: ModelName,
    pub model_b: ModelName,
    pub outcome: Outcome,
    /// Style features of the two responses; needed only for style-controlled ratings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<BattleStyle>,
}

impl Battle {
    pub fn new(
        model_a: impl Into<ModelName>,
        model_b: impl Into<ModelName>,
        outcome: Outcome,
    ) -> Battle {
        Battle {
            model_a: model_a.into(),
            model_b: model_b.into(),
            outcome,
            style: None,
        }
    }

    pub fn with_style(mut self, style: BattleStyle) -> Battle {
        self.style = Some(style);
        self
    }
}

/// A two-sided interval at a stated confidence level (0.95 for a 95% interval).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
}

impl Interval {
    pub fn new(lower: f64, upper: f64, level: f64) -> Interval {
        Interval {
            lower,
            upper,
            level,
        }
    }

    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }

    pub fn width(&self) -> f64 {
        self.upper - self.lower
    }
}

/// A proportion with its count, its interval and how the interval was computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    /// Successes (may be fractional where ties count as half).
    pub successes: f64,
    pub n: u64,
    /// `successes / n`; `None` when `n` is zero.
    pub estimate: Option<f64>,
    pub interval: Option<Interval>,
    /// Two-sided p-value against 50%, where a test was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value_vs_half: Option<f64>,
    pub method: String,
}
