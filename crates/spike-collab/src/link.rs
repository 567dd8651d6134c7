//! Room links: how a room is shared and joined.
//!
//! A room is named by the room server's base URL (`ws://host:port/rooms`) and the room's name.
//! Two textual forms carry that pair:
//! - the Spike link, `spike://room/<room>?server=<percent-encoded base URL>[&token=<token>]`,
//!   which the desktop app copies to the clipboard and registers as the handler of;
//! - the WebSocket URL, `<base URL>/<room>[?token=<token>]`, the address any y-websocket client
//!   (`new WebsocketProvider(base, room, doc)`) connects to.
//!
//! [`RoomLink::parse`] accepts both, so a person can paste either into "Join room".

use url::Url;

use crate::{validate_room, CollabError};

/// The URL scheme of Spike room links.
pub const SCHEME: &str = "spike";

/// A room on a room server, and the access token to use, if any.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RoomLink {
    /// The server's base URL, `ws://` or `wss://`, without a trailing slash.
    pub server: String,
    /// The room's name (see [`validate_room`]).
    pub room: String,
    /// An access token the server asked for (sent as the `token` query parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub token: Option<String>,
}

impl RoomLink {
    /// A link to `room` on `server`.
    ///
    /// Errors: [`CollabError::InvalidUrl`] unless `server` is an absolute `ws://`/`wss://` URL
    /// without a query or fragment; [`CollabError::InvalidRoom`] for a bad room name.
    pub fn new(server: &str, room: &str) -> Result<Self, CollabError> {
        validate_room(room)?;
        let url = Url::parse(server.trim()).map_err(|_| CollabError::InvalidUrl(server.into()))?;
        let ok = matches!(url.scheme(), "ws" | "wss")
            && url.host_str().is_some()
            && url.query().is_none()
            && url.fragment().is_none();
        if !ok {
            return Err(CollabError::InvalidUrl(server.into()));
        }
        Ok(Self {
            server: url.as_str().trim_end_matches('/').to_owned(),
            room: room.to_owned(),
            token: None,
        })
    }

    /// Reads a Spike link or a WebSocket URL (surrounding whitespace is ignored).
    ///
    /// Errors: [`CollabError::InvalidLink`] naming what is wrong (not a URL, another scheme,
    /// no room, no `server` parameter), or the errors of [`RoomLink::new`] for its parts.
    pub fn parse(text: &str) -> Result<Self, CollabError> {
        let text = text.trim();
        let bad = |reason: &str| CollabError::InvalidLink {
            link: text.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(text).map_err(|e| bad(&format!("not a URL ({e})")))?;
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let mut link = match url.scheme() {
            SCHEME => {
                if url.host_str() != Some("room") {
                    return Err(bad("a Spike link starts with spike://room/"));
                }
                let room = url
                    .path_segments()
                    .and_then(|mut s| s.next())
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| bad("no room name after spike://room/"))?;
                let room = percent_decoded(room);
                let server = query("server").ok_or_else(|| bad("no server= parameter"))?;
                Self::new(&server, &room)?
            }
            "ws" | "wss" => {
                let mut base = url.clone();
                base.set_query(None);
                base.set_fragment(None);
                let room = url
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| bad("no room name at the end of the WebSocket URL"))?;
                let room = percent_decoded(room);
                let base = base.as_str();
                let server = &base[..base.len() - base.rsplit('/').next().map_or(0, str::len)];
                Self::new(server, &room)?
            }
            other => {
                return Err(bad(&format!(
                    "expected a spike:// link or a ws:// URL, not {other}:"
                )))
            }
        };
        link.token = query("token").filter(|t| !t.is_empty());
        Ok(link)
    }

    /// The Spike link: `spike://room/<room>?server=<base URL>[&token=…]`.
    pub fn to_link(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("server", &self.server);
        if let Some(token) = &self.token {
            query.append_pair("token", token);
        }
        format!("{SCHEME}://room/{}?{}", self.room, query.finish())
    }

    /// The URL a y-websocket client connects to: `<base URL>/<room>[?token=…]`.
    pub fn websocket_url(&self) -> String {
        let mut url = format!("{}/{}", self.server, self.room);
        if let Some(token) = &self.token {
            url.push_str("?token=");
            url.push_str(
                &url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>(),
            );
        }
        url
    }
}

impl std::fmt::Display for RoomLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_link())
    }
}

/// The HTTP base of a room server, from the WebSocket base URL its rooms are under:
/// `ws://host:port/rooms` → `http://host:port/`, `wss://…` → `https://…`. A path before the final
/// `/rooms` (a reverse proxy's prefix) is kept, and an `http(s)` URL is taken as it is. The
/// server's HTTP APIs (`v1/kv/…`, `v1/reports`, …) are relative to it; it always ends in `/`.
///
/// Errors: [`CollabError::InvalidUrl`] unless `server` is an absolute `ws`, `wss`, `http` or
/// `https` URL with a host.
pub fn http_base(server: &str) -> Result<Url, CollabError> {
    let invalid = || CollabError::InvalidUrl(server.to_owned());
    let mut url = Url::parse(server.trim()).map_err(|_| invalid())?;
    let scheme = match url.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return Err(invalid()),
    };
    if url.host_str().is_none() {
        return Err(invalid());
    }
    url.set_scheme(scheme).map_err(|()| invalid())?;
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/rooms").unwrap_or(path).to_owned();
    url.set_path(&format!("{path}/"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn percent_decoded(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {

    #[test]
    fn room_servers_map_to_their_http_base() {
        let base = |s: &str| http_base(s).map(|u| u.to_string()).ok();
        assert_eq!(
            base("ws://127.0.0.1:8717/rooms").as_deref(),
            Some("http://127.0.0.1:8717/")
        );
        assert_eq!(
            base("wss://spike.example.com/team/rooms/").as_deref(),
            Some("https://spike.example.com/team/")
        );
        assert_eq!(base("http://h:1").as_deref(), Some("http://h:1/"));
        for bad in ["ftp://h/rooms", "not a url", "file:///rooms"] {
            assert!(
                matches!(http_base(bad), Err(CollabError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    use super::*;

    #[test]
    fn spike_links_round_trip() -> Result<(), CollabError> {
        let mut link = RoomLink::new("ws://192.168.1.20:8717/rooms/", "team-a")?;
        assert_eq!(link.server, "ws://192.168.1.20:8717/rooms");
        assert_eq!(
            link.to_link(),
            "spike://room/team-a?server=ws%3A%2F%2F192.168.1.20%3A8717%2Frooms"
        );
        assert_eq!(RoomLink::parse(&link.to_link())?, link);
        link.token = Some("s3cr&t".into());
        assert_eq!(
            link.to_link(),
            "spike://room/team-a?server=ws%3A%2F%2F192.168.1.20%3A8717%2Frooms&token=s3cr%26t"
        );
        assert_eq!(RoomLink::parse(&format!("  {link}\n"))?, link);
        Ok(())
    }

    #[test]
    fn websocket_urls_parse_as_links() -> Result<(), CollabError> {
        let link = RoomLink::parse("wss://spike.example.com/rooms/demo.1?token=abc")?;
        assert_eq!(link.server, "wss://spike.example.com/rooms");
        assert_eq!(link.room, "demo.1");
        assert_eq!(link.token.as_deref(), Some("abc"));
        assert_eq!(
            link.websocket_url(),
            "wss://spike.example.com/rooms/demo.1?token=abc"
        );
        let root = RoomLink::parse("ws://localhost:1234/my-room")?;
        assert_eq!(root.server, "ws://localhost:1234");
        assert_eq!(root.websocket_url(), "ws://localhost:1234/my-room");
        Ok(())
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        let reason = |text: &str| match RoomLink::parse(text) {
            Err(CollabError::InvalidLink { reason, .. }) => reason,
            other => panic!("{text}: expected InvalidLink, got {other:?}"),
        };
        assert!(reason("hello").starts_with("not a URL"));
        assert_eq!(
            reason("https://example.com/rooms/a"),
            "expected a spike:// link or a ws:// URL, not https:"
        );
        assert_eq!(reason("spike://room/a"), "no server= parameter");
        assert_eq!(
            reason("spike://room/?server=ws://h/r"),
            "no room name after spike://room/"
        );
        assert_eq!(
            reason("spike://other/a?server=ws://h/r"),
            "a Spike link starts with spike://room/"
        );
        assert!(matches!(
            RoomLink::parse("spike://room/a%20b?server=ws://h/r"),
            Err(CollabError::InvalidRoom(r)) if r == "a b"
        ));
        assert!(matches!(
            RoomLink::parse("spike://room/a?server=http://h/r"),
            Err(CollabError::InvalidUrl(_))
        ));
    }
}
