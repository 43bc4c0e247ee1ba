//! Safe wrappers over the host callbacks: [`Context`] for a running function and
//! [`Plan`] for the planner that declares a workflow instance's access set.

use crate::abi::{self, FunctionCall, PlanSink, RawBytes};
use crate::{Abort, Table};
use serde::de::DeserializeOwned;

/// What a running function sees: its workflow's arguments, its parents' outputs, and the
/// keys of the declared access set.
pub struct Context<'call> {
    call: &'call FunctionCall,
}

fn refused() -> Abort {
    Abort { message: "access refused by the engine".into(), host_refused: true }
}

impl<'call> Context<'call> {
    pub(crate) fn new(call: &'call FunctionCall) -> Context<'call> {
        Context { call }
    }

    /// The workflow's arguments, decoded.
    pub fn arguments<T: DeserializeOwned>(&self) -> Result<T, Abort> {
        crate::decode(self.raw_arguments())
    }

    /// The workflow's arguments as the client sent them.
    pub fn raw_arguments(&self) -> &[u8] {
        // SAFETY: the host keeps the arguments alive for the whole call.
        unsafe { self.call.arguments.as_slice() }
    }

    /// Number of parents of this step.
    pub fn parent_count(&self) -> usize {
        self.call.parent_count
    }

    /// The output of parent number `index` (in the order the step declared its parents).
    pub fn parent_output(&self, index: usize) -> &[u8] {
        assert!(index < self.call.parent_count, "parent {index} out of range");
        // SAFETY: the host passes `parent_count` valid entries that live for the call.
        unsafe { (*self.call.parent_outputs.add(index)).as_slice() }
    }

    /// The output of parent number `index`, decoded.
    pub fn parent<T: DeserializeOwned>(&self, index: usize) -> Result<T, Abort> {
        crate::decode(self.parent_output(index))
    }

    /// Reads a key of the access set: `None` when it has no value.
    pub fn read(&self, table: Table, key: &[u8]) -> Result<Option<&[u8]>, Abort> {
        let mut out = RawBytes::EMPTY;
        let status = (self.call.read)(self.call.context, table.0, RawBytes::from_slice(key), &mut out);
        match status {
            // SAFETY: the value stays valid until the next write of this key, which needs
            // `&mut self` and so ends this borrow first.
            abi::READ_FOUND => Ok(Some(unsafe { out.as_slice() })),
            abi::READ_ABSENT => Ok(None),
            _ => Err(refused()),
        }
    }

    /// Writes a key of the access set (declared for writing).
    pub fn write(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), Abort> {
        match (self.call.write)(self.call.context, table.0, RawBytes::from_slice(key), RawBytes::from_slice(value)) {
            0 => Ok(()),
            _ => Err(refused()),
        }
    }

    /// Deletes a key of the access set (declared for writing).
    pub fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), Abort> {
        match (self.call.delete)(self.call.context, table.0, RawBytes::from_slice(key)) {
            0 => Ok(()),
            _ => Err(refused()),
        }
    }

    /// Reads a value stored as a little-endian `i64`.
    pub fn read_i64(&self, table: Table, key: &[u8]) -> Result<Option<i64>, Abort> {
        match self.read(table, key)? {
            None => Ok(None),
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| Abort::new(format!("value of {} bytes is not an i64", bytes.len())))?;
                Ok(Some(i64::from_le_bytes(array)))
            }
        }
    }

    /// Writes a value as a little-endian `i64`.
    pub fn write_i64(&mut self, table: Table, key: &[u8], value: i64) -> Result<(), Abort> {
        self.write(table, key, &value.to_le_bytes())
    }

    /// Reads a value stored in the SDK encoding.
    pub fn read_value<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>, Abort> {
        match self.read(table, key)? {
            None => Ok(None),
            Some(bytes) => crate::decode(bytes).map(Some),
        }
    }

    /// Writes a value in the SDK encoding.
    pub fn write_value<T: serde::Serialize>(&mut self, table: Table, key: &[u8], value: &T) -> Result<(), Abort> {
        let bytes = crate::encode(value)?;
        self.write(table, key, &bytes)
    }
}

/// The planner's view: declares which keys a workflow instance reads and writes. The
/// engine orders transactions by these declarations, so a function that touches a key
/// outside them is aborted.
pub struct Plan<'sink> {
    sink: &'sink PlanSink,
    refused: bool,
}

impl<'sink> Plan<'sink> {
    pub(crate) fn new(sink: &'sink PlanSink) -> Plan<'sink> {
        Plan { sink, refused: false }
    }

    pub(crate) fn was_refused(&self) -> bool {
        self.refused
    }

    /// Declares a read of `key`.
    pub fn read(&mut self, table: Table, key: &[u8]) {
        self.add(table, key, abi::MODE_READ);
    }

    /// Declares a write (which may also read) of `key`.
    pub fn write(&mut self, table: Table, key: &[u8]) {
        self.add(table, key, abi::MODE_WRITE);
    }

    fn add(&mut self, table: Table, key: &[u8], mode: u8) {
        if (self.sink.add_access)(self.sink.context, table.0, RawBytes::from_slice(key), mode) != 0 {
            self.refused = true;
        }
    }
}
