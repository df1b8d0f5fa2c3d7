//! ADC bits P of a model: one resolution for every CIM layer, or one per layer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The ADC resolution of a model's CIM layers: `3` (every layer) or `[3, 4, 2, ...]` (one per CIM
/// layer, in forward order). In TOML and on the command line a single value is written as it
/// always was (`psum_bits = 3`, `--psum-bits 3`), so runs of one resolution keep their hash; a
/// list is `psum_bits = [3, 4, 2]` or `--psum-bits 3,4,2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PsumBits {
    /// The same resolution for every CIM layer.
    All(u32),
    /// One resolution per CIM layer, in forward order.
    PerLayer(Vec<u32>),
}

impl PsumBits {
    /// The resolution of CIM layer `index` (forward order). A list too short for `index` is
    /// refused by [`Self::check_layers`] before any layer is built.
    pub fn of_layer(&self, index: usize) -> u32 {
        match self {
            PsumBits::All(bits) => *bits,
            PsumBits::PerLayer(list) => list[index],
        }
    }

    /// The resolution of every layer, where all layers share one (a list of equal values too).
    pub fn uniform(&self) -> Option<u32> {
        match self {
            PsumBits::All(bits) => Some(*bits),
            PsumBits::PerLayer(list) => list.first().copied().filter(|b| list.iter().all(|x| x == b)),
        }
    }

    /// The same setting in its one canonical form: a list of equal values is that value (so an
    /// experiment has one key however it was written).
    pub fn canonical(&self) -> Self {
        match self.uniform() {
            Some(bits) => PsumBits::All(bits),
            None => self.clone(),
        }
    }

    /// One value per layer for a model of `layers` CIM layers.
    pub fn per_layer(&self, layers: usize) -> Vec<u32> {
        (0..layers).map(|i| self.of_layer(i)).collect()
    }

    /// Refuses a list whose length is not the number of CIM layers, naming both.
    pub fn check_layers(&self, layers: usize, model: &str) -> Result<(), String> {
        match self {
            PsumBits::PerLayer(list) if list.len() != layers => Err(format!(
                "psum_bits = {self}: a list of {} values, but {model} has {layers} CIM layers (the 3x3 convs of \
                 its residual blocks, in forward order); give one value for all or {layers} values",
                list.len()
            )),
            _ => Ok(()),
        }
    }
}

impl Default for PsumBits {
    fn default() -> Self {
        PsumBits::All(3)
    }
}

impl From<u32> for PsumBits {
    fn from(bits: u32) -> Self {
        PsumBits::All(bits)
    }
}

/// `3`, or `[3,4,2]` for one value per layer (what labels and errors show, and what
/// [`std::str::FromStr`] reads back).
impl fmt::Display for PsumBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PsumBits::All(bits) => write!(f, "{bits}"),
            PsumBits::PerLayer(list) => {
                let items: Vec<String> = list.iter().map(u32::to_string).collect();
                write!(f, "[{}]", items.join(","))
            }
        }
    }
}

/// `3`, `3,4,2` or `[3, 4, 2]`.
impl std::str::FromStr for PsumBits {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let trimmed = s.trim();
        let list = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
        let inner = list.unwrap_or(trimmed);
        let values = inner
            .split(',')
            .map(|v| v.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("`{s}`: expected ADC bits, one number (3) or one per CIM layer (3,4,2)"))?;
        Ok(match values.as_slice() {
            [bits] if list.is_none() => PsumBits::All(*bits),
            _ => PsumBits::PerLayer(values),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Holder {
        psum_bits: PsumBits,
    }

    #[test]
    fn one_value_is_written_as_before_and_a_list_as_a_list() {
        let one = Holder { psum_bits: PsumBits::All(3) };
        assert_eq!(toml::to_string(&one).unwrap(), "psum_bits = 3\n");
        let list = Holder { psum_bits: PsumBits::PerLayer(vec![3, 4, 2]) };
        let text = toml::to_string(&list).unwrap();
        assert_eq!(text, "psum_bits = [3, 4, 2]\n");
        assert_eq!(toml::from_str::<Holder>(&text).unwrap(), list);
        assert_eq!(toml::from_str::<Holder>("psum_bits = 3").unwrap(), one);
        assert!(toml::from_str::<Holder>("psum_bits = \"three\"").is_err());
    }

    #[test]
    fn parsed_from_the_command_line() {
        assert_eq!("3".parse::<PsumBits>().unwrap(), PsumBits::All(3));
        assert_eq!("3,4,2".parse::<PsumBits>().unwrap(), PsumBits::PerLayer(vec![3, 4, 2]));
        assert_eq!("[3, 4]".parse::<PsumBits>().unwrap(), PsumBits::PerLayer(vec![3, 4]));
        assert_eq!("[3]".parse::<PsumBits>().unwrap(), PsumBits::PerLayer(vec![3]));
        let e = "3,x".parse::<PsumBits>().unwrap_err();
        assert!(e.contains("`3,x`") && e.contains("one per CIM layer"), "{e}");
        for p in [PsumBits::All(5), PsumBits::PerLayer(vec![1, 2, 3])] {
            assert_eq!(p.to_string().parse::<PsumBits>().unwrap(), p);
        }
    }

    #[test]
    fn layers_and_lengths() {
        let p = PsumBits::PerLayer(vec![3, 4, 2]);
        assert_eq!((p.of_layer(1), p.uniform(), p.per_layer(3)), (4, None, vec![3, 4, 2]));
        assert_eq!(PsumBits::PerLayer(vec![3, 3]).canonical(), PsumBits::All(3));
        assert_eq!(PsumBits::All(3).per_layer(2), vec![3, 3]);
        let e = p.check_layers(18, "resnet20").unwrap_err();
        assert!(e.contains("a list of 3 values") && e.contains("resnet20 has 18 CIM layers"), "{e}");
        assert!(p.check_layers(3, "resnet20").is_ok() && PsumBits::All(3).check_layers(18, "x").is_ok());
    }
}
