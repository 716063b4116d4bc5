// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! VERSION negotiation: the capabilities JSON each side sends.

use serde_json::json;
use serde_json::Map;
use serde_json::Value;

use crate::error::Error;
use crate::error::Result;

/// The only protocol version; QEMU refuses a reply other than 0.0.
pub const MAJOR: u16 = 0;
pub const MINOR: u16 = 0;

/// What this server offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// Most fds the server accepts in one message.
    pub max_msg_fds: u32,
    /// Most data in one REGION_READ/WRITE or DMA_READ/WRITE.
    pub max_data_xfer_size: u32,
    pub max_dma_maps: u32,
    pub pgsizes: u64,
    /// Page size of the migration capability (cloud-hypervisor requires `pgsize` when the
    /// capability is present).
    pub migration_pgsize: u32,
    pub write_multiple: bool,
    /// Whether the server may send REGION_MAP/REGION_UNMAP (the proposed `x-region-map`
    /// extension) to a client that proposes it.
    pub region_map: bool,
}

impl Default for ServerCapabilities {
    fn default() -> Self {
        ServerCapabilities {
            max_msg_fds: 16,
            max_data_xfer_size: 1 << 20,
            max_dma_maps: 1024,
            pgsizes: 4096,
            migration_pgsize: 4096,
            write_multiple: true,
            region_map: true,
        }
    }
}

/// What the client said it can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCapabilities {
    /// Most fds the client accepts in one message (default 1).
    pub max_msg_fds: u32,
    /// Most data the client accepts in one DMA_READ/WRITE (default 1 MiB).
    pub max_data_xfer_size: u32,
    /// The client takes REGION_MAP/REGION_UNMAP, and the server offered them.
    pub region_map: bool,
}

impl Default for ClientCapabilities {
    fn default() -> Self {
        ClientCapabilities {
            max_msg_fds: 1,
            max_data_xfer_size: 1 << 20,
            region_map: false,
        }
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::Capabilities(message.into())
}

fn positive_u32(value: &Value, name: &str) -> Result<u32> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| bad(format!("{name} must be a positive 32-bit number")))
}

/// Parses the client's version data (NUL-terminated JSON, possibly absent) and builds the reply
/// JSON (without its NUL). The reply names only capabilities the client proposed, as the
/// specification requires, so it is never larger than the client expects.
pub fn negotiate(data: &[u8], ours: &ServerCapabilities) -> Result<(ClientCapabilities, String)> {
    let text = match data.iter().position(|&b| b == 0) {
        Some(nul) => &data[..nul],
        None => data,
    };
    let mut client = ClientCapabilities::default();
    let proposed = if text.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        let root: Value =
            serde_json::from_slice(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        match root.get("capabilities") {
            None => Map::new(),
            Some(Value::Object(caps)) => caps.clone(),
            Some(_) => return Err(bad("capabilities is not an object")),
        }
    };

    let mut reply = Map::new();
    for (name, value) in &proposed {
        match name.as_str() {
            "max_msg_fds" => {
                client.max_msg_fds = positive_u32(value, name)?;
                reply.insert(name.clone(), json!(ours.max_msg_fds));
            }
            "max_data_xfer_size" => {
                client.max_data_xfer_size = positive_u32(value, name)?;
                reply.insert(name.clone(), json!(ours.max_data_xfer_size));
            }
            "max_dma_maps" => {
                positive_u32(value, name)?;
                reply.insert(name.clone(), json!(ours.max_dma_maps));
            }
            "pgsizes" => {
                value
                    .as_u64()
                    .ok_or_else(|| bad("pgsizes must be a number"))?;
                reply.insert(name.clone(), json!(ours.pgsizes));
            }
            "migration" => {
                if !value.is_object() {
                    return Err(bad("migration is not an object"));
                }
                reply.insert(name.clone(), json!({ "pgsize": ours.migration_pgsize }));
            }
            "write_multiple" => {
                let theirs = value
                    .as_bool()
                    .ok_or_else(|| bad("write_multiple must be a boolean"))?;
                reply.insert(name.clone(), json!(theirs && ours.write_multiple));
            }
            "x-region-map" => {
                let theirs = value
                    .as_bool()
                    .ok_or_else(|| bad("x-region-map must be a boolean"))?;
                client.region_map = theirs && ours.region_map;
                reply.insert(name.clone(), json!(client.region_map));
            }
            // twin_socket and capabilities of later versions: not offered.
            _ => {}
        }
    }
    let reply = json!({ "capabilities": Value::Object(reply) }).to_string();
    Ok((client, reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_a_subset_of_the_proposal() {
        let qemu = br#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}"#;
        let (client, reply) = negotiate(qemu, &ServerCapabilities::default()).unwrap();
        assert_eq!(client.max_msg_fds, 16);
        let reply: Value = serde_json::from_str(&reply).unwrap();
        let caps = reply["capabilities"].as_object().unwrap();
        assert_eq!(caps.len(), 5);
        assert_eq!(caps["write_multiple"], json!(true));
        assert!(caps.get("migration").is_none());
    }

    #[test]
    fn cloud_hypervisor_gets_migration_pgsize() {
        let ch = b"{\"capabilities\":{\"max_msg_fds\":1,\"max_data_xfer_size\":1048576,\"migration\":{\"pgsize\":4096}}}\0";
        let (client, reply) = negotiate(ch, &ServerCapabilities::default()).unwrap();
        assert_eq!(client.max_msg_fds, 1);
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["capabilities"]["migration"]["pgsize"], json!(4096));
    }

    #[test]
    fn region_map_only_when_both_sides_want_it() {
        let proposal = br#"{"capabilities":{"x-region-map":true}}"#;
        let (client, reply) = negotiate(proposal, &ServerCapabilities::default()).unwrap();
        assert!(client.region_map);
        assert_eq!(reply, r#"{"capabilities":{"x-region-map":true}}"#);
        let off = ServerCapabilities {
            region_map: false,
            ..Default::default()
        };
        let (client, reply) = negotiate(proposal, &off).unwrap();
        assert!(!client.region_map);
        assert_eq!(reply, r#"{"capabilities":{"x-region-map":false}}"#);
        let (client, _) = negotiate(b"{}", &ServerCapabilities::default()).unwrap();
        assert!(!client.region_map);
        assert!(negotiate(
            br#"{"capabilities":{"x-region-map":1}}"#,
            &ServerCapabilities::default()
        )
        .is_err());
    }

    #[test]
    fn absent_and_bad_json() {
        let (client, reply) = negotiate(b"", &ServerCapabilities::default()).unwrap();
        assert_eq!(client, ClientCapabilities::default());
        assert_eq!(reply, r#"{"capabilities":{}}"#);
        assert!(negotiate(b"{not json", &ServerCapabilities::default()).is_err());
        assert!(negotiate(br#"{"capabilities":7}"#, &ServerCapabilities::default()).is_err());
        assert!(negotiate(
            br#"{"capabilities":{"max_msg_fds":0}}"#,
            &ServerCapabilities::default()
        )
        .is_err());
        assert!(negotiate(
            br#"{"capabilities":{"max_msg_fds":-3}}"#,
            &ServerCapabilities::default()
        )
        .is_err());
    }
}
