// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! What a server's Wayland relays report in its log when a connection closes: how many messages
//! went to the compositor, what was copied out for them, and how often the compositor was lent
//! the shared-memory region's own file instead.

/// One relay connection, from its closing line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RelayConnection {
    pub messages: u64,
    pub copied_bytes: u64,
    pub copy_ms: f64,
    pub lent_files: u64,
}

/// Every relay connection closed in `log`, in order.
pub fn relay_connections(log: &str) -> Vec<RelayConnection> {
    log.lines().filter_map(parse_line).collect()
}

/// Parses "... connection closed after M messages to the peer; copied out B bytes in T ms; lent
/// the region's file N times".
fn parse_line(line: &str) -> Option<RelayConnection> {
    let rest = line
        .split("socket relay: connection closed after ")
        .nth(1)?;
    let (messages, rest) = rest.split_once(" messages to the peer; copied out ")?;
    let (bytes, rest) = rest.split_once(" bytes in ")?;
    let (ms, rest) = rest.split_once(" ms; lent the region's file ")?;
    let lent = rest.split_whitespace().next()?;
    Some(RelayConnection {
        messages: messages.trim().parse().ok()?,
        copied_bytes: bytes.parse().ok()?,
        copy_ms: ms.parse().ok()?,
        lent_files: lent.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_lines_are_read_and_others_ignored() {
        let log = "[INFO] socket relay: connection closed after 12 messages to the peer; copied \
                   out 16777216 bytes in 3.5 ms; lent the region's file 0 times\n\
                   [INFO] something else\n\
                   socket relay: connection closed after 3 messages to the peer; copied out 0 \
                   bytes in 0.0 ms; lent the region's file 2 times\n";
        assert_eq!(
            relay_connections(log),
            vec![
                RelayConnection {
                    messages: 12,
                    copied_bytes: 16 << 20,
                    copy_ms: 3.5,
                    lent_files: 0
                },
                RelayConnection {
                    messages: 3,
                    copied_bytes: 0,
                    copy_ms: 0.0,
                    lent_files: 2
                },
            ]
        );
    }
}
