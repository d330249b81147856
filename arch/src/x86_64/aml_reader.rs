//! Test support: reads back the AML tandem's DSDT is made of — scopes,
//! devices, named integers, strings, buffers and packages, and the resource
//! descriptors inside `_CRS` buffers — the way an interpreter would, so
//! tests check what a guest will understand rather than byte patterns.
//! Anything outside that subset panics: the tables should not contain it.

/// A named object's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Integer(u64),
    String(String),
    Buffer(Vec<u8>),
    Package(Vec<Value>),
}

/// One term of a term list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Scope(String, Vec<Object>),
    Device(String, Vec<Object>),
    Name(String, Value),
}

/// Decodes a term list (a table's body after its 36-byte header).
pub fn parse(aml: &[u8]) -> Vec<Object> {
    let mut reader = Reader { aml, at: 0 };
    let objects = reader.term_list(aml.len());
    assert_eq!(reader.at, aml.len());
    objects
}

/// The body of the device `name` anywhere under `objects`.
pub fn device<'a>(objects: &'a [Object], name: &str) -> Option<&'a [Object]> {
    objects.iter().find_map(|object| match object {
        Object::Device(n, body) if n == name => Some(body.as_slice()),
        Object::Device(_, body) | Object::Scope(_, body) => device(body, name),
        Object::Name(..) => None,
    })
}

/// The value named `name` directly in `body`.
pub fn name<'a>(body: &'a [Object], name: &str) -> Option<&'a Value> {
    body.iter().find_map(|object| match object {
        Object::Name(n, value) if n == name => Some(value),
        _ => None,
    })
}

/// Every device name under `objects`.
pub fn device_names(objects: &[Object]) -> Vec<String> {
    let mut names = Vec::new();
    for object in objects {
        match object {
            Object::Device(n, body) => {
                names.push(n.clone());
                names.extend(device_names(body));
            }
            Object::Scope(_, body) => names.extend(device_names(body)),
            Object::Name(..) => {}
        }
    }
    names
}

/// The compressed EISA ID `_HID` and `_CID` integers hold: three letters
/// of five bits and four hex digits, stored big-endian.
pub fn eisa_id(id: &str) -> u64 {
    let b = id.as_bytes();
    let letters = b[..3]
        .iter()
        .fold(0u32, |acc, &c| (acc << 5) | u32::from(c - b'@'));
    let product = u32::from_str_radix(&id[3..], 16).unwrap();
    u64::from(((letters << 16) | product).swap_bytes())
}

/// A resource descriptor from a `_CRS` buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `IO(Decode16, min, max, alignment, length)`.
    Io {
        min: u16,
        max: u16,
        alignment: u8,
        len: u8,
    },
    /// `Memory32Fixed`.
    Memory32Fixed { writable: bool, base: u32, len: u32 },
    /// A Word, DWord or QWord address space: `kind` 0 memory, 1 I/O, 2 bus
    /// numbers; `producer` when the device forwards the range (general
    /// flags bit 0 clear); `type_flags` the kind's own flags (memory:
    /// bit 0 writable, bits 1-2 cacheability, 3 = prefetchable).
    Address {
        width: u8,
        kind: u8,
        producer: bool,
        type_flags: u8,
        min: u64,
        max: u64,
        translation: u64,
        len: u64,
    },
    /// An extended interrupt descriptor with one interrupt.
    Interrupt { flags: u8, gsi: u32 },
}

/// Decodes a resource template up to its end tag.
pub fn resources(buffer: &[u8]) -> Vec<Resource> {
    let mut found = Vec::new();
    let mut at = 0;
    loop {
        let tag = buffer[at];
        if tag & 0x80 == 0 {
            // Small item: type in bits 6-3, length in bits 2-0.
            let len = usize::from(tag & 7);
            let body = &buffer[at + 1..at + 1 + len];
            match tag >> 3 {
                0x0f => {
                    assert_eq!(at + 2, buffer.len(), "end tag ends the buffer");
                    return found;
                }
                0x08 => {
                    assert_eq!(body[0], 1, "16-bit decode");
                    found.push(Resource::Io {
                        min: u16_at(body, 1),
                        max: u16_at(body, 3),
                        alignment: body[5],
                        len: body[6],
                    });
                }
                other => panic!("small resource type {other:#x}"),
            }
            at += 1 + len;
        } else {
            let len = usize::from(u16_at(buffer, at + 1));
            let body = &buffer[at + 3..at + 3 + len];
            let address = |width: u8| {
                let size = usize::from(width / 8);
                let field = |i: usize| le(&body[3 + i * size..3 + (i + 1) * size]);
                assert_eq!(len, 3 + 5 * size, "{width}-bit address space length");
                assert_eq!(body[1] & 0b1100, 0b1100, "min and max fixed");
                assert_eq!(field(0), 0, "granularity");
                Resource::Address {
                    width,
                    kind: body[0],
                    producer: body[1] & 1 == 0,
                    type_flags: body[2],
                    min: field(1),
                    max: field(2),
                    translation: field(3),
                    len: field(4),
                }
            };
            found.push(match tag {
                0x86 => Resource::Memory32Fixed {
                    writable: body[0] & 1 == 1,
                    base: u32_at(body, 1),
                    len: u32_at(body, 5),
                },
                0x88 => address(16),
                0x87 => address(32),
                0x8a => address(64),
                0x89 => {
                    assert_eq!(body[1], 1, "one interrupt");
                    Resource::Interrupt {
                        flags: body[0],
                        gsi: u32_at(body, 2),
                    }
                }
                other => panic!("large resource type {other:#x}"),
            });
            at += 3 + len;
        }
    }
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    le(&bytes[at..at + 2]) as u16
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    le(&bytes[at..at + 4]) as u32
}

struct Reader<'a> {
    aml: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.aml[self.at];
        self.at += 1;
        b
    }

    fn take(&mut self, len: usize) -> &[u8] {
        let bytes = &self.aml[self.at..self.at + len];
        self.at += len;
        bytes
    }

    /// A PkgLength; returns where the package ends (it counts itself).
    fn package_end(&mut self) -> usize {
        let start = self.at;
        let lead = self.byte();
        let follow = usize::from(lead >> 6);
        let len = if follow == 0 {
            usize::from(lead & 0x3f)
        } else {
            assert_eq!(lead & 0x30, 0, "reserved PkgLength bits");
            (0..follow).fold(usize::from(lead & 0x0f), |acc, i| {
                acc | usize::from(self.byte()) << (4 + 8 * i)
            })
        };
        start + len
    }

    fn name_seg(&mut self) -> String {
        let seg = self.take(4);
        assert!(
            seg.iter()
                .all(|&c| c == b'_' || c.is_ascii_uppercase() || c.is_ascii_digit()),
            "name segment {seg:x?}"
        );
        String::from_utf8(seg.to_vec()).unwrap()
    }

    fn name_string(&mut self) -> String {
        let mut name = String::new();
        while matches!(self.aml[self.at], b'\\' | b'^') {
            name.push(char::from(self.byte()));
        }
        let segments = match self.aml[self.at] {
            0x00 => {
                self.at += 1;
                0
            }
            0x2e => {
                self.at += 1;
                2
            }
            0x2f => {
                self.at += 1;
                usize::from(self.byte())
            }
            _ => 1,
        };
        let segs: Vec<String> = (0..segments).map(|_| self.name_seg()).collect();
        name + &segs.join(".")
    }

    fn term_list(&mut self, end: usize) -> Vec<Object> {
        let mut objects = Vec::new();
        while self.at < end {
            objects.push(match self.byte() {
                0x08 => {
                    let name = self.name_string();
                    Object::Name(name, self.data())
                }
                0x10 => {
                    let end = self.package_end();
                    let name = self.name_string();
                    Object::Scope(name, self.term_list(end))
                }
                0x5b if self.aml[self.at] == 0x82 => {
                    self.at += 1;
                    let end = self.package_end();
                    let name = self.name_string();
                    Object::Device(name, self.term_list(end))
                }
                op => panic!("opcode {op:#x} at {:#x}", self.at - 1),
            });
        }
        assert_eq!(self.at, end, "term list overruns its package");
        objects
    }

    fn integer(&mut self, size: usize) -> u64 {
        le(self.take(size))
    }

    fn data(&mut self) -> Value {
        match self.byte() {
            0x00 => Value::Integer(0),
            0x01 => Value::Integer(1),
            0xff => Value::Integer(u64::MAX),
            0x0a => Value::Integer(self.integer(1)),
            0x0b => Value::Integer(self.integer(2)),
            0x0c => Value::Integer(self.integer(4)),
            0x0e => Value::Integer(self.integer(8)),
            0x0d => {
                let len = self.aml[self.at..].iter().position(|&b| b == 0).unwrap();
                let text = String::from_utf8(self.take(len).to_vec()).unwrap();
                self.at += 1;
                Value::String(text)
            }
            0x11 => {
                let end = self.package_end();
                let Value::Integer(size) = self.data() else {
                    panic!("buffer size is not an integer")
                };
                assert_eq!(self.at + size as usize, end, "buffer size");
                Value::Buffer(self.take(size as usize).to_vec())
            }
            0x12 => {
                let end = self.package_end();
                let count = usize::from(self.byte());
                let elements: Vec<Value> = (0..count).map(|_| self.data()).collect();
                assert_eq!(self.at, end, "package of {count} elements");
                Value::Package(elements)
            }
            op => panic!("data opcode {op:#x} at {:#x}", self.at - 1),
        }
    }
}
