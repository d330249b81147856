//! A small reader for flattened device tree blobs: enough to check what
//! [`build`](crate::build) produced (tests, `--dump-fdt` inspection) without
//! `dtc`. Malformed input gives a [`DecodeError`], never a panic.

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Why a blob could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed device tree: {0}")]
pub struct DecodeError(String);

fn bad<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// One node: its name (`unit@address`), properties in order, children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// Name including the unit address; empty for the root.
    pub name: String,
    /// (name, raw value) pairs.
    pub props: Vec<(String, Vec<u8>)>,
    /// Child nodes in order.
    pub children: Vec<Node>,
}

impl Node {
    /// The child called exactly `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Children whose name starts with `prefix` (e.g. `"cpu@"`).
    pub fn children_named<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Node> {
        self.children
            .iter()
            .filter(move |c| c.name.starts_with(prefix))
    }

    /// The node at `path` below this one (`"/cpus/cpu@0"`; `"/"` is self).
    pub fn find(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |node, part| node.child(part))
    }

    /// Raw value of property `name`.
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether property `name` exists (empty properties are flags).
    pub fn has(&self, name: &str) -> bool {
        self.prop(name).is_some()
    }

    /// Property as big-endian 32-bit cells.
    pub fn u32s(&self, name: &str) -> Option<Vec<u32>> {
        let v = self.prop(name)?;
        (v.len() % 4 == 0).then(|| {
            v.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// Property as big-endian 64-bit values (pairs of cells).
    pub fn u64s(&self, name: &str) -> Option<Vec<u64>> {
        let cells = self.u32s(name)?;
        (cells.len() % 2 == 0).then(|| {
            cells
                .chunks_exact(2)
                .map(|c| (u64::from(c[0]) << 32) | u64::from(c[1]))
                .collect()
        })
    }

    /// Property holding exactly one 32-bit cell.
    pub fn u32(&self, name: &str) -> Option<u32> {
        match self.u32s(name)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// Property holding exactly one 64-bit value.
    pub fn u64(&self, name: &str) -> Option<u64> {
        match self.u64s(name)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// Property as a list of NUL-terminated strings.
    pub fn strings(&self, name: &str) -> Option<Vec<&str>> {
        let v = self.prop(name)?.strip_suffix(&[0])?;
        v.split(|&b| b == 0)
            .map(|s| std::str::from_utf8(s).ok())
            .collect()
    }

    /// Property holding exactly one string.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.strings(name)?.as_slice() {
            [s] => Some(s),
            _ => None,
        }
    }
}

/// Cursor over the structure block.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.bytes(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn bytes(&mut self, len: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(len).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return bad("structure block ends early");
        };
        let out = &self.data[self.pos..end];
        // Tokens are 4-byte aligned; padding past the end is checked next read.
        self.pos = (end + 3) & !3;
        Ok(out)
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return bad("unterminated node name");
        };
        let name =
            String::from_utf8(rest[..len].to_vec()).or_else(|_| bad("node name is not UTF-8"))?;
        self.bytes(len + 1)?;
        Ok(name)
    }
}

fn header_field(blob: &[u8], index: usize) -> Result<u32, DecodeError> {
    match blob.get(index * 4..index * 4 + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => bad("blob shorter than its header"),
    }
}

fn block(blob: &[u8], offset: u32, size: u32) -> Result<&[u8], DecodeError> {
    let start = offset as usize;
    match start
        .checked_add(size as usize)
        .and_then(|end| blob.get(start..end))
    {
        Some(b) => Ok(b),
        None => bad("block outside the blob"),
    }
}

/// Reads a device tree blob and returns its root node.
pub fn decode(blob: &[u8]) -> Result<Node, DecodeError> {
    if header_field(blob, 0)? != FDT_MAGIC {
        return bad("bad magic");
    }
    let total = header_field(blob, 1)? as usize;
    if total > blob.len() {
        return bad(format!(
            "totalsize {total} exceeds the {} bytes given",
            blob.len()
        ));
    }
    let blob = &blob[..total];
    let structure = block(blob, header_field(blob, 2)?, header_field(blob, 9)?)?;
    let strings = block(blob, header_field(blob, 3)?, header_field(blob, 8)?)?;

    let mut reader = Reader {
        data: structure,
        pos: 0,
    };
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    loop {
        match reader.u32()? {
            FDT_BEGIN_NODE => {
                if root.is_some() {
                    return bad("second root node");
                }
                let name = reader.cstr()?;
                stack.push(Node {
                    name,
                    ..Node::default()
                });
            }
            FDT_END_NODE => {
                let Some(node) = stack.pop() else {
                    return bad("unbalanced end of node");
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            FDT_PROP => {
                let len = reader.u32()? as usize;
                let name_off = reader.u32()? as usize;
                let value = reader.bytes(len)?.to_vec();
                let name = strings
                    .get(name_off..)
                    .and_then(|s| s.split(|&b| b == 0).next())
                    .and_then(|s| std::str::from_utf8(s).ok());
                let (Some(name), Some(node)) = (name, stack.last_mut()) else {
                    return bad("property outside a node or with a bad name");
                };
                node.props.push((name.to_owned(), value));
            }
            FDT_NOP => {}
            FDT_END => break,
            token => return bad(format!("unknown token {token:#x}")),
        }
    }
    match (root, stack.is_empty()) {
        (Some(root), true) => Ok(root),
        _ => bad("no complete root node"),
    }
}
