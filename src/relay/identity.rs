//! Who this relay is: its stable id and this life's incarnation, as it
//! tells servers (`Welcome`) and the relay registry.

#[derive(Debug, Clone)]
pub struct RelayIdentity {
    pub id: String,
    /// Random per start.
    pub incarnation: String,
}

impl RelayIdentity {
    pub fn new(id: String) -> Self {
        Self {
            id,
            incarnation: crate::clock::new_incarnation(),
        }
    }
}
