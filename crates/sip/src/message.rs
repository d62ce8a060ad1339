//! SIP message codec (RFC 3261 §7, UDP framing §18.3): parse and serialize.
//!
//! - Start line: request line (`METHOD uri SIP/2.0`) or status line
//!   (`SIP/2.0 code reason`).
//! - Headers are kept in order, names as received; lookups understand the
//!   compact forms (`v f t i m l c k s e`) and are case-insensitive. Folded
//!   (continuation) lines are joined. Lines end with CRLF; a bare LF is
//!   accepted too.
//! - Body: `Content-Length` bytes after the empty line; without the header,
//!   the rest of the datagram. A datagram shorter than `Content-Length` is an
//!   error; bytes beyond it are discarded, as §18.3 requires for UDP (their
//!   count is kept in [`Message::discarded`]).
//! - A request must carry Via, From, To, Call-ID and CSeq, each well formed,
//!   and the CSeq method must be the request's.
//!
//! Parsing never panics: malformed input gives a [`ParseError`] naming what
//! is wrong. [`salvage`] digs the headers a `400 Bad Request` needs out of a
//! request that failed to parse.

use std::fmt;
use std::net::SocketAddr;

/// Largest datagram accepted (the UDP payload limit).
pub const MAX_DATAGRAM: usize = 65_535;
/// Longest header line (after joining folded lines).
pub const MAX_HEADER_LINE: usize = 8_192;
/// Most headers in one message.
pub const MAX_HEADERS: usize = 128;
/// Default port of a `sent-by` without one (§18.2.2 for UDP).
pub const DEFAULT_PORT: u16 = 5060;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty datagram (or only CR/LF keep-alive)")]
    Empty,
    #[error("datagram of {0} bytes exceeds {MAX_DATAGRAM} bytes")]
    TooLarge(usize),
    #[error("line {line}: not UTF-8 text or contains control characters")]
    NotText { line: usize },
    #[error("header section is not terminated by an empty line (missing CRLF)")]
    NoEmptyLine,
    #[error("bad request line: {0}")]
    BadRequestLine(String),
    #[error("bad status line: {0}")]
    BadStatusLine(String),
    #[error("unsupported protocol version {0:?} (want SIP/2.0)")]
    BadVersion(String),
    #[error("line {line}: not a header (`name: value`)")]
    BadHeaderLine { line: usize },
    #[error("line {line}: header of {len} bytes exceeds {MAX_HEADER_LINE} bytes")]
    HeaderTooLong { line: usize, len: usize },
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    #[error("bad {header} header: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    #[error("Content-Length is {declared} but only {actual} bytes of body arrived")]
    BodyTruncated { declared: usize, actual: usize },
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMethodMismatch { cseq: String, method: String },
}

fn bad(header: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError::BadHeader {
        header,
        reason: reason.into(),
    }
}

/// Shortens text quoted into an error (input may be huge or hostile).
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A request method. Methods are case-sensitive (§7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Message,
    Prack,
    Other(String),
}

impl Method {
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "MESSAGE" => Method::Message,
            "PRACK" => Method::Prack,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Message => "MESSAGE",
            Method::Prack => "PRACK",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Whether this header is `full` (a canonical name such as "Call-ID"),
    /// by its full or compact name, case-insensitively.
    pub fn is(&self, full: &str) -> bool {
        self.name.eq_ignore_ascii_case(full)
            || expand_compact(&self.name).is_some_and(|n| n.eq_ignore_ascii_case(full))
    }
}

/// Full name of a compact header name (§7.3.3 and registered compact forms).
pub fn expand_compact(name: &str) -> Option<&'static str> {
    let b = name.as_bytes();
    if b.len() != 1 {
        return None;
    }
    Some(match b[0].to_ascii_lowercase() {
        b'v' => "Via",
        b'f' => "From",
        b't' => "To",
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'k' => "Supported",
        b's' => "Subject",
        b'e' => "Content-Encoding",
        _ => return None,
    })
}

/// One parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    /// Bytes after `Content-Length` bytes of body, dropped (§18.3).
    pub discarded: usize,
}

/// `CSeq: <seq> <method>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// One Via entry: `SIP/2.0/<transport> <host>[:<port>] *(;param)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

/// RFC 3261 branches start with this magic cookie.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        let v = value.trim();
        // sent-protocol: "SIP" SLASH "2.0" SLASH transport, LWS allowed around slashes.
        let (name, rest) = v
            .split_once('/')
            .ok_or_else(|| bad("Via", format!("no protocol in {:?}", excerpt(v))))?;
        let (version, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad("Via", format!("no transport in {:?}", excerpt(v))))?;
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return Err(bad(
                "Via",
                format!("protocol is not SIP/2.0 in {:?}", excerpt(v)),
            ));
        }
        let rest = rest.trim_start();
        let tend = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let transport = &rest[..tend];
        if transport.is_empty() || !transport.chars().all(is_token_char) {
            return Err(bad("Via", format!("bad transport in {:?}", excerpt(v))));
        }
        let rest = rest[tend..].trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i + 1..]),
            None => (rest.trim(), ""),
        };
        let (host, port) = split_host_port(sent_by)
            .ok_or_else(|| bad("Via", format!("bad sent-by {:?}", excerpt(sent_by))))?;
        let mut out = Vec::new();
        if !params.trim().is_empty() {
            for p in params.split(';') {
                let p = p.trim();
                let (n, val) = match p.split_once('=') {
                    Some((n, val)) => (n.trim(), Some(val.trim().to_string())),
                    None => (p, None),
                };
                if n.is_empty() || !n.chars().all(is_token_char) {
                    return Err(bad("Via", format!("bad parameter {:?}", excerpt(p))));
                }
                out.push((n.to_string(), val));
            }
        }
        Ok(Via {
            transport: transport.to_string(),
            host: host.to_string(),
            port,
            params: out,
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten().filter(|b| !b.is_empty())
    }

    /// `host:port`, host lowercased, port defaulted: the transaction key part.
    pub fn sent_by(&self) -> String {
        format!(
            "{}:{}",
            self.host.to_ascii_lowercase(),
            self.port.unwrap_or(DEFAULT_PORT)
        )
    }

    /// Sets a parameter (replacing its value if present).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(p) => p.1 = value,
            None => self.params.push((name.to_string(), value)),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// `host[:port]` with IPv6 references in brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &s[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if !host_ok {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Splits a header value at top-level commas (not inside quotes or `<>`).
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// A From/To/Contact value (`name-addr` or `addr-spec`) split into its
/// URI and its header parameters (`;a=b;c`, empty if none).
pub fn addr_and_params<'a>(
    header: &'static str,
    value: &'a str,
) -> Result<(&'a str, &'a str), ParseError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(bad(header, "empty"));
    }
    // Find where the header parameters start: after `>` of a name-addr,
    // else at the first `;` of a bare addr-spec.
    let mut quoted = false;
    let mut escaped = false;
    let mut params_at = None;
    let mut angle_open = None;
    for (i, c) in v.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted && angle_open.is_none() => angle_open = Some(i),
            '>' if !quoted && angle_open.is_some() => {
                params_at = Some(i + 1);
                break;
            }
            ';' if !quoted && angle_open.is_none() => {
                params_at = Some(i);
                break;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(bad(header, "unterminated quoted string"));
    }
    let addr_end = params_at.unwrap_or(v.len());
    let uri = match angle_open {
        Some(open) if params_at.is_some() => &v[open + 1..addr_end - 1],
        Some(_) => return Err(bad(header, "`<` without `>`")),
        None => &v[..addr_end],
    };
    if !uri.contains(':') {
        return Err(bad(header, format!("no URI in {:?}", excerpt(v))));
    }
    Ok((uri.trim(), &v[addr_end..]))
}

/// The value of header parameter `name` in `params` (`;a=b;c`): `Some("")`
/// for a parameter without a value.
pub fn header_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let p = p.trim();
        let (n, val) = p
            .split_once('=')
            .map_or((p, ""), |(n, val)| (n.trim(), val.trim()));
        n.eq_ignore_ascii_case(name).then_some(val)
    })
}

/// The `tag` parameter of a From/To value (`name-addr` or `addr-spec`).
pub fn tag_of(header: &'static str, value: &str) -> Result<Option<String>, ParseError> {
    let (_, params) = addr_and_params(header, value)?;
    match header_param(params, "tag") {
        None => Ok(None),
        Some(val) if is_token(val) => Ok(Some(val.to_string())),
        Some(val) => Err(bad(header, format!("bad tag {:?}", excerpt(val)))),
    }
}

/// The IP address a SIP URI's host is, if it is one.
pub fn uri_ip(uri: &str) -> Option<std::net::IpAddr> {
    let (host, _) = split_host_port(uri_hostport(uri)?)?;
    host.trim_matches(['[', ']']).parse().ok()
}

/// `host[:port]` of a SIP URI (`sip:user@host:port;params`), if it has one.
pub fn uri_hostport(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let hp = &rest[..end];
    split_host_port(hp).map(|_| hp)
}

impl Message {
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        self.method().is_some()
    }

    /// Headers named `full` (full or compact name), in order.
    pub fn headers_named<'a>(&'a self, full: &'a str) -> impl Iterator<Item = &'a Header> + 'a {
        self.headers.iter().filter(move |h| h.is(full))
    }

    /// Value of the first header named `full`.
    pub fn header(&self, full: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.is(full))
            .map(|h| h.value.as_str())
    }

    /// The only value of a single-valued header; a second, different one is an error.
    fn single(&self, full: &'static str) -> Result<&str, ParseError> {
        let mut it = self.headers.iter().filter(|h| h.is(full));
        let first = it.next().ok_or(ParseError::MissingHeader(full))?;
        if it.any(|h| h.value != first.value) {
            return Err(bad(full, "appears more than once with different values"));
        }
        Ok(first.value.as_str())
    }

    /// Every Via entry, top first (multiple headers and comma lists).
    pub fn vias(&self) -> Vec<&str> {
        self.headers_named("Via")
            .flat_map(|h| split_list(&h.value))
            .collect()
    }

    pub fn top_via(&self) -> Result<Via, ParseError> {
        let top = self
            .vias()
            .into_iter()
            .next()
            .ok_or(ParseError::MissingHeader("Via"))?;
        Via::parse(top)
    }

    /// Top Via branch, if any.
    pub fn branch(&self) -> Result<Option<String>, ParseError> {
        Ok(self.top_via()?.branch().map(str::to_string))
    }

    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = self.single("Call-ID")?.trim();
        if v.is_empty() || v.chars().any(|c| c.is_whitespace()) {
            return Err(bad(
                "Call-ID",
                format!("not a single word: {:?}", excerpt(v)),
            ));
        }
        Ok(v)
    }

    pub fn from_tag(&self) -> Result<Option<String>, ParseError> {
        tag_of("From", self.single("From")?)
    }

    pub fn to_tag(&self) -> Result<Option<String>, ParseError> {
        tag_of("To", self.single("To")?)
    }

    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        let v = self.single("CSeq")?;
        let mut parts = v.split_whitespace();
        let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(
                "CSeq",
                format!("want `<number> <method>`, got {:?}", excerpt(v)),
            ));
        };
        // §8.1.1.5: a 32-bit unsigned integer less than 2**31.
        let seq = match num.parse::<u32>() {
            Ok(n) if n < 1 << 31 && num.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(bad(
                    "CSeq",
                    format!("bad sequence number {:?}", excerpt(num)),
                ))
            }
        };
        if !is_token(method) {
            return Err(bad("CSeq", format!("bad method {:?}", excerpt(method))));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }

    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        let mut found: Option<usize> = None;
        for h in self.headers_named("Content-Length") {
            let v = h.value.trim();
            if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(
                    "Content-Length",
                    format!("not a number: {:?}", excerpt(v)),
                ));
            }
            let n: usize = v
                .parse()
                .map_err(|_| bad("Content-Length", "out of range"))?;
            if found.is_some_and(|f| f != n) {
                return Err(bad("Content-Length", "appears twice with different values"));
            }
            found = Some(n);
        }
        Ok(found)
    }

    /// The checks every request/response must pass (§8.1.1): mandatory
    /// headers present and well formed.
    fn validate(&self) -> Result<(), ParseError> {
        self.top_via()?;
        for v in self.vias().into_iter().skip(1) {
            Via::parse(v)?;
        }
        self.from_tag()?;
        self.to_tag()?;
        self.call_id()?;
        let cseq = self.cseq()?;
        if let Some(m) = self.method() {
            if *m != cseq.method {
                return Err(ParseError::CSeqMethodMismatch {
                    cseq: cseq.method.to_string(),
                    method: m.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Wire form: CRLF line ends, headers in order, then the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512);
        match &self.start {
            StartLine::Request { method, uri } => {
                s.push_str(&format!("{method} {uri} SIP/2.0\r\n"))
            }
            StartLine::Response { code, reason } => {
                s.push_str(&format!("SIP/2.0 {code} {reason}\r\n"))
            }
        }
        for h in &self.headers {
            s.push_str(&h.name);
            s.push_str(": ");
            s.push_str(&h.value);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

impl Message {
    /// The message with `body` of `content_type` (its Content-Length set).
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Message {
        self.headers
            .retain(|h| !h.is("Content-Length") && !h.is("Content-Type"));
        self.headers.push(Header::new("Content-Type", content_type));
        self.headers
            .push(Header::new("Content-Length", body.len().to_string()));
        self.body = body;
        self
    }

    /// Whether the body is of `content_type` (parameters and case aside).
    pub fn body_is(&self, content_type: &str) -> bool {
        self.header("Content-Type").is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(content_type))
        })
    }
}

/// Next line from `pos`: (line without CR/LF, whether a LF ended it).
fn next_line<'a>(data: &'a [u8], pos: &mut usize) -> Option<(&'a [u8], bool)> {
    if *pos >= data.len() {
        return None;
    }
    let rest = &data[*pos..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            *pos += i + 1;
            let line = &rest[..i];
            Some((line.strip_suffix(b"\r").unwrap_or(line), true))
        }
        None => {
            *pos = data.len();
            Some((rest, false))
        }
    }
}

fn text(line: &[u8], no: usize) -> Result<&str, ParseError> {
    let s = std::str::from_utf8(line).map_err(|_| ParseError::NotText { line: no })?;
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::NotText { line: no });
    }
    Ok(s)
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        let mut it = line.splitn(3, ' ');
        let version = it.next().unwrap_or_default();
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(ParseError::BadVersion(excerpt(version)));
        }
        let code = it.next().unwrap_or_default();
        let reason = it.next().unwrap_or_default();
        let code = match code.parse::<u16>() {
            Ok(c) if code.len() == 3 && (100..=699).contains(&c) => c,
            _ => {
                return Err(ParseError::BadStatusLine(format!(
                    "bad status code in {:?}",
                    excerpt(line)
                )))
            }
        };
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(ParseError::BadRequestLine(format!(
            "want `METHOD uri SIP/2.0`, got {:?}",
            excerpt(line)
        )));
    };
    if !is_token(method) {
        return Err(ParseError::BadRequestLine(format!(
            "bad method {:?}",
            excerpt(method)
        )));
    }
    if uri.is_empty() || !uri.contains(':') {
        return Err(ParseError::BadRequestLine(format!(
            "bad Request-URI {:?}",
            excerpt(uri)
        )));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::BadVersion(excerpt(version)));
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri.to_string(),
    })
}

/// Parses one datagram.
pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
    if data.len() > MAX_DATAGRAM {
        return Err(ParseError::TooLarge(data.len()));
    }
    // Leading CRLFs (keep-alives, §7.5) are ignored.
    let mut pos = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::Empty)?;
    let (first, terminated) = next_line(data, &mut pos).ok_or(ParseError::Empty)?;
    let start = parse_start_line(text(first, 1)?)?;
    if !terminated {
        return Err(ParseError::NoEmptyLine);
    }
    let mut headers: Vec<Header> = Vec::new();
    let mut no = 1;
    loop {
        let Some((line, terminated)) = next_line(data, &mut pos) else {
            return Err(ParseError::NoEmptyLine);
        };
        no += 1;
        if !terminated {
            return Err(ParseError::NoEmptyLine);
        }
        if line.is_empty() {
            break;
        }
        if line.len() > MAX_HEADER_LINE {
            return Err(ParseError::HeaderTooLong {
                line: no,
                len: line.len(),
            });
        }
        let line = text(line, no)?;
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header (§7.3.1).
            let last = headers
                .last_mut()
                .ok_or(ParseError::BadHeaderLine { line: no })?;
            let len = last.name.len() + last.value.len() + line.len();
            if len > MAX_HEADER_LINE {
                return Err(ParseError::HeaderTooLong { line: no, len });
            }
            last.value.push(' ');
            last.value.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::BadHeaderLine { line: no })?;
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::BadHeaderLine { line: no });
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        headers.push(Header::new(name, value.trim()));
    }
    let mut msg = Message {
        start,
        headers,
        body: Vec::new(),
        discarded: 0,
    };
    let rest = &data[pos..];
    match msg.content_length()? {
        Some(n) if n > rest.len() => {
            return Err(ParseError::BodyTruncated {
                declared: n,
                actual: rest.len(),
            })
        }
        Some(n) => {
            msg.body = rest[..n].to_vec();
            msg.discarded = rest.len() - n;
        }
        None => msg.body = rest.to_vec(),
    }
    msg.validate()?;
    Ok(msg)
}

/// What a `400 Bad Request` needs from a request that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    pub method: Method,
    /// Via (all, in order), From, To, Call-ID, CSeq, under their full names.
    pub headers: Vec<Header>,
}

/// Tolerant scan of a request that failed [`parse`]: if the first line
/// looks like a request line and Via, From, To, Call-ID and CSeq can be
/// found, returns them so that a 400 can be sent; None means drop.
pub fn salvage(data: &[u8]) -> Option<Salvaged> {
    let data = &data[..data.len().min(MAX_DATAGRAM)];
    let mut pos = data.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let (first, _) = next_line(data, &mut pos)?;
    let first = std::str::from_utf8(first).ok()?;
    let mut parts = first.split_whitespace();
    let (Some(method), Some(_uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !is_token(method) || !version.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    const WANTED: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];
    let mut headers = Vec::new();
    while let Some((line, _)) = next_line(data, &mut pos) {
        if line.is_empty() {
            break;
        }
        if line.len() > MAX_HEADER_LINE {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if line.chars().any(|c| c.is_control() && c != '\t') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let probe = Header::new(name.trim(), value.trim());
        let Some(full) = WANTED.iter().find(|w| probe.is(w)) else {
            continue;
        };
        if probe.value.is_empty()
            || (*full != "Via" && headers.iter().any(|h: &Header| h.name == *full))
        {
            continue;
        }
        headers.push(Header::new(*full, probe.value));
    }
    WANTED
        .iter()
        .all(|w| headers.iter().any(|h| h.name == *w))
        .then(|| Salvaged {
            method: Method::from_token(method),
            headers,
        })
}

/// Builds a response to a request, from its headers (§8.2.6): Via (all, the
/// top one with `received`/`rport` for `source`, §18.2.1 and RFC 3581),
/// From, Call-ID, CSeq copied; To copied with `to_tag` added if it has none;
/// then `extra`, then `Content-Length: 0`.
pub fn response(
    request_headers: &[Header],
    source: SocketAddr,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: Vec<Header>,
) -> Message {
    let mut headers = Vec::new();
    let mut first_via = true;
    for h in request_headers.iter().filter(|h| h.is("Via")) {
        let mut value = h.value.clone();
        if first_via {
            first_via = false;
            let list = split_list(&h.value);
            if let Some((top, rest)) = list.split_first() {
                if let Ok(mut via) = Via::parse(top) {
                    let ip = source.ip().to_string();
                    let rport = via.param("rport").is_some();
                    if rport {
                        via.set_param("rport", Some(source.port().to_string()));
                    }
                    if rport || via.host.trim_matches(['[', ']']) != ip {
                        via.set_param("received", Some(ip));
                    }
                    let mut v = via.to_string();
                    for r in rest {
                        v.push_str(", ");
                        v.push_str(r);
                    }
                    value = v;
                }
            }
        }
        headers.push(Header::new("Via", value));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(h) = request_headers.iter().find(|h| h.is(name)) {
            let mut value = h.value.clone();
            if name == "To" {
                if let (Some(tag), Ok(None)) = (to_tag, tag_of("To", &value)) {
                    value.push_str(";tag=");
                    value.push_str(tag);
                }
            }
            headers.push(Header::new(name, value));
        }
    }
    if code == 100 {
        if let Some(ts) = request_headers.iter().find(|h| h.is("Timestamp")) {
            headers.push(ts.clone());
        }
    }
    headers.extend(extra);
    headers.push(Header::new("Content-Length", "0"));
    Message {
        start: StartLine::Response {
            code,
            reason: reason.to_string(),
        },
        headers,
        body: Vec::new(),
        discarded: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_parses_with_lws_ipv6_and_params() {
        let v = Via::parse("SIP / 2.0 / UDP [2001:db8::1]:5070 ;branch=z9hG4bK-1;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bK-1"));
        assert_eq!(v.param("rport"), Some(None));
        assert_eq!(v.sent_by(), "[2001:db8::1]:5070");
        assert_eq!(
            Via::parse("SIP/2.0/UDP Host.Example").unwrap().sent_by(),
            "host.example:5060"
        );
        assert!(Via::parse("SIP/2.0/UDP host:99999").is_err());
        assert!(Via::parse("SIP/3.0/UDP host").is_err());
        assert!(Via::parse("garbage").is_err());
    }

    #[test]
    fn tags_in_name_addr_and_addr_spec() {
        assert_eq!(
            tag_of("From", "\"A;b\" <sip:a@b;tag=no>;tag=yes")
                .unwrap()
                .as_deref(),
            Some("yes")
        );
        assert_eq!(
            tag_of("From", "sip:a@b;tag=x1").unwrap().as_deref(),
            Some("x1")
        );
        assert_eq!(tag_of("To", "<sip:a@b>").unwrap(), None);
        assert!(tag_of("To", "<sip:a@b").is_err());
        assert!(tag_of("To", "nobody").is_err());
    }

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        assert_eq!(
            split_list("a, \"b,c\" <sip:x,y>, d"),
            vec!["a", "\"b,c\" <sip:x,y>", "d"]
        );
    }

    #[test]
    fn uri_hostport_variants() {
        assert_eq!(
            uri_hostport("sip:svc@127.0.0.1:5070"),
            Some("127.0.0.1:5070")
        );
        assert_eq!(
            uri_hostport("sip:example.com;transport=udp"),
            Some("example.com")
        );
        assert_eq!(uri_hostport("sip:u@[::1]:5060"), Some("[::1]:5060"));
        assert_eq!(uri_hostport("nonsense"), None);
    }
}
