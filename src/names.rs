//! The name alphabet shared by every tier: user names (client protocol,
//! Admin API) and server ids (flags, Redis keys, log lines) are 1 to 64
//! bytes of ASCII letters, digits and `_ - . @`, so they are safe inside
//! Redis keys and cannot contain the separators (`:`, space) that keys and
//! kick notices use.

pub const MAX_NAME_BYTES: usize = 64;

/// The alphabet's human description, for error messages.
pub const NAME_RULE: &str = "1 to 64 bytes of letters, digits and _ - . @";

pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_contract_alphabet() {
        assert!(is_valid_name("alice"));
        assert!(is_valid_name("a.b-c_d@e9"));
        assert!(is_valid_name(&"x".repeat(64)));
    }

    #[test]
    fn rejects_everything_else() {
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"x".repeat(65)));
        assert!(!is_valid_name("al ice"));
        assert!(!is_valid_name("ålice"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name("a:b"));
    }
}
