//! The libibverbs implementation of the rdma fabric (feature `rdma`): device, memory
//! registrations, RC queue pairs, posting and polling work requests, and the tcp
//! bootstrap that exchanges queue pair endpoints and region keys.
//!
//! Compiled in CI, not run there (no device): see the parent module for what is untested.
//! All `unsafe` of the rdma backend lives in this file.

use super::RdmaConfig;
use crate::memory::{check_range, check_word, RegionMemory};
use crate::{
    check_batch_limits, FabricError, LocalRegion, NodeId, Operation, RegionId, RemoteRegion, MAX_BATCH_OPERATIONS,
    MAX_TRANSFER_BYTES,
};
use parking_lot::{Mutex, RwLock};
use rdma_sys::*;
use rustc_hash::FxHashMap;
use std::ffi::CStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Work requests one queue pair may have outstanding: one batch.
const QUEUE_DEPTH: u32 = MAX_BATCH_OPERATIONS as u32;
/// Staging memory per connection: a batch's transfer limit plus a word per atomic.
const STAGING_BYTES: u64 = MAX_TRANSFER_BYTES + MAX_BATCH_OPERATIONS as u64 * 8;
/// How long a batch may wait for its completions before the peer counts as unreachable.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a bootstrap exchange may take.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Outstanding RDMA READ and atomic requests per queue pair, capped by the device's limit.
const READ_ATOMIC_DEPTH_MAX: u8 = 16;

const BOOTSTRAP_CONNECT: u8 = 1;
const BOOTSTRAP_DESCRIBE: u8 = 2;
const ENDPOINT_BYTES: usize = 26;

fn unavailable(reason: String) -> FabricError {
    FabricError::Unavailable { backend: "rdma", reason }
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// An open device context, its protection domain and the facts of the port in use.
struct Device {
    context: *mut ibv_context,
    protection_domain: *mut ibv_pd,
    port_number: u8,
    gid_index: u8,
    local_id: u16,
    gid: [u8; 16],
    active_mtu: ibv_mtu::Type,
    read_atomic_depth: u8,
}

// SAFETY: libibverbs objects may be used from any thread (the library locks internally);
// posting to one queue pair is serialized by `Connection::post_lock`.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    fn open(config: &RdmaConfig) -> Result<Device, FabricError> {
        let mut count: std::os::raw::c_int = 0;
        // SAFETY: plain FFI call with a valid out-pointer.
        let list = unsafe { ibv_get_device_list(&mut count) };
        if list.is_null() {
            return Err(unavailable(format!("no RDMA device (ibv_get_device_list: {})", last_os_error())));
        }
        // SAFETY: the list holds `count` device pointers until it is freed below.
        let devices = unsafe { std::slice::from_raw_parts(list, count.max(0) as usize) };
        let name_of = |device: *mut ibv_device| -> String {
            // SAFETY: the device pointer comes from the live list; the name is a C string.
            unsafe { CStr::from_ptr(ibv_get_device_name(device)) }.to_string_lossy().into_owned()
        };
        let chosen = match &config.device_name {
            None => devices.first().copied(),
            Some(wanted) => devices.iter().copied().find(|device| name_of(*device) == *wanted),
        };
        let Some(chosen) = chosen else {
            let found: Vec<String> = devices.iter().map(|device| name_of(*device)).collect();
            // SAFETY: the list came from ibv_get_device_list and is freed once.
            unsafe { ibv_free_device_list(list) };
            return Err(unavailable(match &config.device_name {
                None => "no RDMA device (the device list is empty)".to_string(),
                Some(wanted) => format!("no RDMA device named {wanted}; found {found:?}"),
            }));
        };
        // SAFETY: `chosen` is in the live list; an opened context stays valid after the
        // list is freed (libibverbs keeps the device referenced).
        let context = unsafe { ibv_open_device(chosen) };
        // SAFETY: as above, freed once.
        unsafe { ibv_free_device_list(list) };
        if context.is_null() {
            return Err(unavailable(format!("cannot open the RDMA device: {}", last_os_error())));
        }
        let mut device = Device {
            context,
            protection_domain: std::ptr::null_mut(),
            port_number: config.port_number,
            gid_index: config.gid_index,
            local_id: 0,
            gid: [0; 16],
            active_mtu: ibv_mtu::IBV_MTU_1024,
            read_atomic_depth: 1,
        };
        // SAFETY: the context is open; from here on `device`'s Drop releases what exists.
        device.protection_domain = unsafe { ibv_alloc_pd(context) };
        if device.protection_domain.is_null() {
            return Err(unavailable(format!("cannot allocate a protection domain: {}", last_os_error())));
        }
        // SAFETY: a zeroed plain C struct is a valid output buffer.
        let mut port: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and out-pointer.
        if unsafe { ___ibv_query_port(context, config.port_number, &mut port) } != 0 {
            return Err(unavailable(format!("cannot query port {}: {}", config.port_number, last_os_error())));
        }
        if port.state != ibv_port_state::IBV_PORT_ACTIVE {
            return Err(unavailable(format!("port {} is not active (state {})", config.port_number, port.state)));
        }
        device.local_id = port.lid;
        device.active_mtu = port.active_mtu;
        // SAFETY: a zeroed union of plain bytes is a valid GID.
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and out-pointer.
        if unsafe { ibv_query_gid(context, config.port_number, i32::from(config.gid_index), &mut gid) } != 0 {
            return Err(unavailable(format!("cannot query GID index {}: {}", config.gid_index, last_os_error())));
        }
        // SAFETY: every bit pattern is a valid `raw` view of the GID union.
        device.gid = unsafe { gid.raw };
        // SAFETY: a zeroed plain C struct is a valid output buffer.
        let mut attributes: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and out-pointer.
        if unsafe { ibv_query_device(context, &mut attributes) } != 0 {
            return Err(unavailable(format!("cannot query the device: {}", last_os_error())));
        }
        if attributes.atomic_cap == ibv_atomic_cap::IBV_ATOMIC_NONE {
            return Err(unavailable("the device supports no RDMA atomics".to_string()));
        }
        let device_depth = attributes.max_qp_rd_atom.min(attributes.max_qp_init_rd_atom).max(1);
        device.read_atomic_depth = device_depth.min(i32::from(READ_ATOMIC_DEPTH_MAX)) as u8;
        Ok(device)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every registration and queue pair holds an `Arc<Device>`, so none is
        // left; each handle is released once.
        unsafe {
            if !self.protection_domain.is_null() {
                ibv_dealloc_pd(self.protection_domain);
            }
            ibv_close_device(self.context);
        }
    }
}

/// A memory registration (MR) of region memory with the device.
struct Registration {
    device: Arc<Device>,
    memory_region: *mut ibv_mr,
}

// SAFETY: see `Device`.
unsafe impl Send for Registration {}
unsafe impl Sync for Registration {}

impl Registration {
    fn new(device: &Arc<Device>, memory: &RegionMemory) -> Result<Registration, FabricError> {
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC.0;
        // SAFETY: the memory is valid for its size and outlives the registration (the
        // owner of a `Registration` also owns the memory and drops it afterwards).
        let memory_region = unsafe {
            ibv_reg_mr(
                device.protection_domain,
                memory.base_address().cast(),
                memory.size_bytes() as usize,
                access as std::os::raw::c_int,
            )
        };
        if memory_region.is_null() {
            return Err(unavailable(format!("cannot register {} bytes: {}", memory.size_bytes(), last_os_error())));
        }
        Ok(Registration { device: Arc::clone(device), memory_region })
    }

    fn local_key(&self) -> u32 {
        // SAFETY: the MR is registered until drop.
        unsafe { (*self.memory_region).lkey }
    }

    fn remote_key(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.memory_region).rkey }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: registered in `new`, deregistered once; `device` is still alive.
        unsafe { ibv_dereg_mr(self.memory_region) };
        let _ = &self.device;
    }
}

/// What a peer needs to connect a queue pair to one of ours.
#[derive(Clone, Copy, Debug)]
struct Endpoint {
    local_id: u16,
    queue_pair_number: u32,
    packet_sequence_number: u32,
    gid: [u8; 16],
}

impl Endpoint {
    fn encode(&self) -> [u8; ENDPOINT_BYTES] {
        let mut bytes = [0u8; ENDPOINT_BYTES];
        bytes[0..2].copy_from_slice(&self.local_id.to_le_bytes());
        bytes[2..6].copy_from_slice(&self.queue_pair_number.to_le_bytes());
        bytes[6..10].copy_from_slice(&self.packet_sequence_number.to_le_bytes());
        bytes[10..26].copy_from_slice(&self.gid);
        bytes
    }

    fn decode(bytes: &[u8; ENDPOINT_BYTES]) -> Endpoint {
        let field = |range: std::ops::Range<usize>| &bytes[range];
        Endpoint {
            local_id: u16::from_le_bytes(field(0..2).try_into().expect("two bytes")),
            queue_pair_number: u32::from_le_bytes(field(2..6).try_into().expect("four bytes")),
            // Packet sequence numbers have 24 bits.
            packet_sequence_number: u32::from_le_bytes(field(6..10).try_into().expect("four bytes")) & 0x00ff_ffff,
            gid: field(10..26).try_into().expect("sixteen bytes"),
        }
    }
}

/// A reliable-connected queue pair with its own completion queue.
struct QueuePair {
    device: Arc<Device>,
    completion_queue: *mut ibv_cq,
    queue_pair: *mut ibv_qp,
    packet_sequence_number: u32,
}

// SAFETY: see `Device`.
unsafe impl Send for QueuePair {}
unsafe impl Sync for QueuePair {}

impl QueuePair {
    /// Creates a queue pair in the INIT state.
    fn create(device: &Arc<Device>) -> Result<QueuePair, FabricError> {
        // SAFETY: valid context; no completion channel (completions are polled).
        let completion_queue = unsafe {
            ibv_create_cq(device.context, (QUEUE_DEPTH * 2) as i32, std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        if completion_queue.is_null() {
            return Err(unavailable(format!("cannot create a completion queue: {}", last_os_error())));
        }
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let mut created = QueuePair {
            device: Arc::clone(device),
            completion_queue,
            queue_pair: std::ptr::null_mut(),
            packet_sequence_number: nanos & 0x00ff_ffff,
        };
        // SAFETY: a zeroed init-attribute struct is valid; the fields that matter are set.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = completion_queue;
        init.recv_cq = completion_queue;
        init.cap.max_send_wr = QUEUE_DEPTH;
        init.cap.max_recv_wr = 1;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        // SAFETY: valid protection domain and attributes.
        created.queue_pair = unsafe { ibv_create_qp(device.protection_domain, &mut init) };
        if created.queue_pair.is_null() {
            return Err(unavailable(format!("cannot create a queue pair: {}", last_os_error())));
        }
        // SAFETY: zeroed attributes with the INIT fields set.
        let mut attributes: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attributes.qp_state = ibv_qp_state::IBV_QPS_INIT;
        attributes.pkey_index = 0;
        attributes.port_num = device.port_number;
        attributes.qp_access_flags = ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC.0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE.0
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX.0
            | ibv_qp_attr_mask::IBV_QP_PORT.0
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS.0;
        created.modify(&mut attributes, mask, "INIT")?;
        Ok(created)
    }

    fn modify(&self, attributes: &mut ibv_qp_attr, mask: u32, state: &str) -> Result<(), FabricError> {
        // SAFETY: the queue pair exists; the attributes are initialised for `mask`.
        if unsafe { ibv_modify_qp(self.queue_pair, attributes, mask as i32) } != 0 {
            return Err(unavailable(format!("cannot move a queue pair to {state}: {}", last_os_error())));
        }
        Ok(())
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            local_id: self.device.local_id,
            // SAFETY: the queue pair exists until drop.
            queue_pair_number: unsafe { (*self.queue_pair).qp_num },
            packet_sequence_number: self.packet_sequence_number,
            gid: self.device.gid,
        }
    }

    /// Moves the queue pair to RTR and RTS, connected to `remote`.
    fn connect(&self, remote: &Endpoint) -> Result<(), FabricError> {
        // SAFETY: zeroed attributes with the RTR fields set.
        let mut attributes: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attributes.qp_state = ibv_qp_state::IBV_QPS_RTR;
        attributes.path_mtu = self.device.active_mtu;
        attributes.dest_qp_num = remote.queue_pair_number;
        attributes.rq_psn = remote.packet_sequence_number;
        attributes.max_dest_rd_atomic = self.device.read_atomic_depth;
        attributes.min_rnr_timer = 12;
        attributes.ah_attr.dlid = remote.local_id;
        attributes.ah_attr.sl = 0;
        attributes.ah_attr.src_path_bits = 0;
        attributes.ah_attr.port_num = self.device.port_number;
        // RoCE addresses by GID (the LID is 0 there); InfiniBand by LID.
        if remote.gid != [0; 16] {
            attributes.ah_attr.is_global = 1;
            attributes.ah_attr.grh.dgid = ibv_gid { raw: remote.gid };
            attributes.ah_attr.grh.sgid_index = self.device.gid_index;
            attributes.ah_attr.grh.hop_limit = 1;
        }
        let mask = ibv_qp_attr_mask::IBV_QP_STATE.0
            | ibv_qp_attr_mask::IBV_QP_AV.0
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU.0
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN.0
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN.0
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC.0
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER.0;
        self.modify(&mut attributes, mask, "RTR")?;
        // SAFETY: zeroed attributes with the RTS fields set.
        let mut attributes: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attributes.qp_state = ibv_qp_state::IBV_QPS_RTS;
        attributes.timeout = 14;
        attributes.retry_cnt = 7;
        attributes.rnr_retry = 7;
        attributes.sq_psn = self.packet_sequence_number;
        attributes.max_rd_atomic = self.device.read_atomic_depth;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE.0
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT.0
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT.0
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY.0
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN.0
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC.0;
        self.modify(&mut attributes, mask, "RTS")
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: created in `create`, destroyed once, queue pair before its completion
        // queue; no work request is outstanding (batches wait for their completions).
        unsafe {
            if !self.queue_pair.is_null() {
                ibv_destroy_qp(self.queue_pair);
            }
            ibv_destroy_cq(self.completion_queue);
        }
    }
}

/// This node's queue pair to one peer, with the staging memory its work requests use.
struct Connection {
    node: NodeId,
    queue_pair: QueuePair,
    staging_registration: Registration,
    staging: RegionMemory,
    /// One batch at a time: the staging memory and the completion queue are per batch.
    post_lock: Mutex<()>,
    /// Set when the queue pair failed (it is in the error state and stays there).
    broken: AtomicBool,
}

/// A registered region: its memory registration first, so it is dropped before the memory.
struct RegisteredRegion {
    registration: Registration,
    local: Arc<LocalRegion>,
}

/// What the bootstrap listener shares with the fabric.
struct BootstrapShared {
    node: NodeId,
    device: Arc<Device>,
    regions: RwLock<FxHashMap<RegionId, RegisteredRegion>>,
    /// Queue pairs peers connected to us, one per peer (a reconnect replaces it).
    inbound_queue_pairs: Mutex<FxHashMap<NodeId, QueuePair>>,
    shutting_down: AtomicBool,
}

/// The verbs backend behind [`super::RdmaFabric`].
pub(super) struct VerbsFabric {
    shared: Arc<BootstrapShared>,
    bootstrap_address: SocketAddr,
    peers: RwLock<FxHashMap<NodeId, SocketAddr>>,
    connections: Mutex<FxHashMap<NodeId, Arc<Connection>>>,
}

impl VerbsFabric {
    pub(super) fn open(node: NodeId, config: &RdmaConfig) -> Result<VerbsFabric, FabricError> {
        let device = Arc::new(Device::open(config)?);
        let listener = TcpListener::bind(config.bootstrap_listen)
            .map_err(|error| FabricError::io(format!("bind {}", config.bootstrap_listen), error))?;
        let bootstrap_address =
            listener.local_addr().map_err(|error| FabricError::io("read the bootstrap address", error))?;
        let shared = Arc::new(BootstrapShared {
            node,
            device,
            regions: RwLock::new(FxHashMap::default()),
            inbound_queue_pairs: Mutex::new(FxHashMap::default()),
            shutting_down: AtomicBool::new(false),
        });
        let listener_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("fabric-rdma-bootstrap-{node}"))
            .spawn(move || serve_bootstrap(listener, listener_shared))
            .map_err(|error| FabricError::io("start the rdma bootstrap listener", error))?;
        Ok(VerbsFabric {
            shared,
            bootstrap_address,
            peers: RwLock::new(FxHashMap::default()),
            connections: Mutex::new(FxHashMap::default()),
        })
    }

    pub(super) fn node_id(&self) -> NodeId {
        self.shared.node
    }

    pub(super) fn bootstrap_address(&self) -> SocketAddr {
        self.bootstrap_address
    }

    pub(super) fn add_peer(&self, node: NodeId, bootstrap_address: SocketAddr) {
        self.peers.write().insert(node, bootstrap_address);
        self.connections.lock().remove(&node);
    }

    pub(super) fn register_region(&self, region: RegionId, size_bytes: u64) -> Result<Arc<LocalRegion>, FabricError> {
        let mut regions = self.shared.regions.write();
        if regions.contains_key(&region) {
            return Err(FabricError::RegionExists { region });
        }
        let local = Arc::new(LocalRegion::new(self.shared.node, region, RegionMemory::zeroed_heap(size_bytes)?));
        let registration = Registration::new(&self.shared.device, local.memory())?;
        regions.insert(region, RegisteredRegion { registration, local: Arc::clone(&local) });
        Ok(local)
    }

    pub(super) fn deregister_region(&self, region: RegionId) -> Result<(), FabricError> {
        match self.shared.regions.write().remove(&region) {
            Some(_) => Ok(()),
            None => Err(FabricError::UnknownRegion { node: self.shared.node, region }),
        }
    }

    pub(super) fn open_remote(&self, node: NodeId, region: RegionId) -> Result<Arc<dyn RemoteRegion>, FabricError> {
        if node == self.shared.node {
            return match self.shared.regions.read().get(&region) {
                Some(registered) => Ok(Arc::clone(&registered.local) as Arc<dyn RemoteRegion>),
                None => Err(FabricError::UnknownRegion { node, region }),
            };
        }
        let address = *self.peers.read().get(&node).ok_or(FabricError::UnknownPeer { node })?;
        let connection = self.connection(node, address)?;
        let unreachable = |reason: String| FabricError::PeerUnreachable { node, reason };
        let mut stream = bootstrap_stream(address).map_err(|error| unreachable(format!("bootstrap: {error}")))?;
        let mut request = vec![BOOTSTRAP_DESCRIBE];
        request.extend_from_slice(&region.0.to_le_bytes());
        let mut reply = [0u8; 21];
        stream
            .write_all(&request)
            .and_then(|()| stream.read_exact(&mut reply))
            .map_err(|error| unreachable(format!("describe region {region}: {error}")))?;
        if reply[0] != 0 {
            return Err(FabricError::UnknownRegion { node, region });
        }
        let remote_address = u64::from_le_bytes(reply[1..9].try_into().expect("eight bytes"));
        let remote_key = u32::from_le_bytes(reply[9..13].try_into().expect("four bytes"));
        let size_bytes = u64::from_le_bytes(reply[13..21].try_into().expect("eight bytes"));
        Ok(Arc::new(RdmaRemoteRegion { region, size_bytes, remote_address, remote_key, connection }))
    }

    /// This node's connection to `node`, set up through its bootstrap listener when
    /// missing or broken.
    fn connection(&self, node: NodeId, address: SocketAddr) -> Result<Arc<Connection>, FabricError> {
        let mut connections = self.connections.lock();
        if let Some(connection) = connections.get(&node) {
            if !connection.broken.load(Ordering::Acquire) {
                return Ok(Arc::clone(connection));
            }
        }
        let device = &self.shared.device;
        let queue_pair = QueuePair::create(device)?;
        let unreachable = |reason: String| FabricError::PeerUnreachable { node, reason };
        let mut stream = bootstrap_stream(address).map_err(|error| unreachable(format!("bootstrap: {error}")))?;
        let mut request = vec![BOOTSTRAP_CONNECT];
        request.extend_from_slice(&self.shared.node.to_le_bytes());
        request.extend_from_slice(&queue_pair.endpoint().encode());
        let mut reply = [0u8; 1 + ENDPOINT_BYTES];
        stream
            .write_all(&request)
            .and_then(|()| stream.read_exact(&mut reply))
            .map_err(|error| unreachable(format!("exchange queue pairs: {error}")))?;
        if reply[0] != 0 {
            return Err(unreachable("the peer could not set up its queue pair".to_string()));
        }
        let remote = Endpoint::decode(reply[1..].try_into().expect("endpoint bytes"));
        queue_pair.connect(&remote)?;
        let staging = RegionMemory::zeroed_heap(STAGING_BYTES)?;
        let staging_registration = Registration::new(device, &staging)?;
        let connection = Arc::new(Connection {
            node,
            queue_pair,
            staging_registration,
            staging,
            post_lock: Mutex::new(()),
            broken: AtomicBool::new(false),
        });
        connections.insert(node, Arc::clone(&connection));
        Ok(connection)
    }
}

impl Drop for VerbsFabric {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        // Wake the bootstrap listener, which then sees the flag and stops.
        let _ = TcpStream::connect_timeout(&self.bootstrap_address, BOOTSTRAP_TIMEOUT);
    }
}

fn bootstrap_stream(address: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, BOOTSTRAP_TIMEOUT)?;
    stream.set_read_timeout(Some(BOOTSTRAP_TIMEOUT))?;
    stream.set_write_timeout(Some(BOOTSTRAP_TIMEOUT))?;
    Ok(stream)
}

/// Answers peers' connect and describe requests, one short connection each.
fn serve_bootstrap(listener: TcpListener, shared: Arc<BootstrapShared>) {
    for stream in listener.incoming() {
        if shared.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let served = stream
            .set_read_timeout(Some(BOOTSTRAP_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(BOOTSTRAP_TIMEOUT)))
            .and_then(|()| serve_bootstrap_request(&mut stream, &shared));
        if let Err(error) = served {
            tracing::debug!(%error, "rdma bootstrap: request failed");
        }
    }
}

fn serve_bootstrap_request(stream: &mut TcpStream, shared: &BootstrapShared) -> std::io::Result<()> {
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind)?;
    match kind[0] {
        BOOTSTRAP_CONNECT => {
            let mut request = [0u8; 2 + ENDPOINT_BYTES];
            stream.read_exact(&mut request)?;
            let peer = u16::from_le_bytes([request[0], request[1]]);
            let remote = Endpoint::decode(request[2..].try_into().expect("endpoint bytes"));
            let mut reply = [0u8; 1 + ENDPOINT_BYTES];
            match QueuePair::create(&shared.device).and_then(|queue_pair| {
                queue_pair.connect(&remote)?;
                Ok(queue_pair)
            }) {
                Ok(queue_pair) => {
                    reply[1..].copy_from_slice(&queue_pair.endpoint().encode());
                    shared.inbound_queue_pairs.lock().insert(peer, queue_pair);
                }
                Err(error) => {
                    tracing::warn!(%error, peer, "rdma bootstrap: cannot accept a queue pair");
                    reply[0] = 1;
                }
            }
            stream.write_all(&reply)
        }
        BOOTSTRAP_DESCRIBE => {
            let mut region = [0u8; 4];
            stream.read_exact(&mut region)?;
            let region = RegionId(u32::from_le_bytes(region));
            let mut reply = [0u8; 21];
            match shared.regions.read().get(&region) {
                Some(registered) => {
                    let memory = registered.local.memory();
                    reply[1..9].copy_from_slice(&(memory.base_address() as u64).to_le_bytes());
                    reply[9..13].copy_from_slice(&registered.registration.remote_key().to_le_bytes());
                    reply[13..21].copy_from_slice(&memory.size_bytes().to_le_bytes());
                }
                None => reply[0] = 1,
            }
            stream.write_all(&reply)
        }
        _ => Ok(()),
    }
}

/// A peer's region reached through this node's queue pair to the peer.
struct RdmaRemoteRegion {
    region: RegionId,
    size_bytes: u64,
    remote_address: u64,
    remote_key: u32,
    connection: Arc<Connection>,
}

impl RdmaRemoteRegion {
    fn check(&self, operation: &Operation<'_>) -> Result<(), FabricError> {
        let checked = match operation {
            Operation::Read { .. } | Operation::Write { .. } => {
                check_range(operation.offset(), operation.length_bytes(), self.size_bytes)
            }
            Operation::CompareAndSwap { .. } | Operation::FetchAdd { .. } => {
                check_word(operation.offset(), self.size_bytes)
            }
        };
        checked.map_err(|error| error.at(self.connection.node, self.region))
    }

    fn unreachable(&self, reason: String) -> FabricError {
        FabricError::PeerUnreachable { node: self.connection.node, reason }
    }

    /// Posts the batch as one chain of signaled work requests and waits for all their
    /// completions. Returns the index and status of the first failed request, if any.
    fn post_and_wait(
        &self,
        operations: &[Operation<'_>],
        staging_offsets: &[u64],
    ) -> Result<Option<(usize, ibv_wc_status::Type)>, FabricError> {
        let connection = &self.connection;
        let staging_base = connection.staging.base_address() as u64;
        let local_key = connection.staging_registration.local_key();
        let mut scatter: Vec<ibv_sge> = Vec::with_capacity(operations.len());
        for (operation, staging_offset) in operations.iter().zip(staging_offsets) {
            scatter.push(ibv_sge {
                addr: staging_base + staging_offset,
                length: operation.length_bytes() as u32,
                lkey: local_key,
            });
        }
        // SAFETY: zeroed work requests are valid; every field that matters is set below.
        let mut requests: Vec<ibv_send_wr> =
            (0..operations.len()).map(|_| unsafe { std::mem::zeroed::<ibv_send_wr>() }).collect();
        let mut after_read_or_atomic = false;
        for (index, operation) in operations.iter().enumerate() {
            let request = &mut requests[index];
            let remote_address = self.remote_address + operation.offset();
            request.wr_id = index as u64;
            request.sg_list = &mut scatter[index];
            request.num_sge = i32::from(operation.length_bytes() > 0);
            // Later requests wait for earlier READs and atomics, keeping issue order.
            let mut flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
            if after_read_or_atomic {
                flags |= ibv_send_flags::IBV_SEND_FENCE.0;
            }
            request.send_flags = flags;
            match operation {
                Operation::Read { .. } | Operation::Write { .. } => {
                    request.opcode = match operation {
                        Operation::Read { .. } => ibv_wr_opcode::IBV_WR_RDMA_READ,
                        _ => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
                    };
                    request.wr.rdma = rdma_t { remote_addr: remote_address, rkey: self.remote_key };
                }
                Operation::CompareAndSwap { expected, new, .. } => {
                    request.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_CMP_AND_SWP;
                    request.wr.atomic = atomic_t {
                        remote_addr: remote_address,
                        compare_add: *expected,
                        swap: *new,
                        rkey: self.remote_key,
                    };
                }
                Operation::FetchAdd { delta, .. } => {
                    request.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
                    request.wr.atomic =
                        atomic_t { remote_addr: remote_address, compare_add: *delta, swap: 0, rkey: self.remote_key };
                }
            }
            after_read_or_atomic |= !matches!(operation, Operation::Write { .. });
        }
        let chain: *mut ibv_send_wr = requests.as_mut_ptr();
        for index in 1..requests.len() {
            // SAFETY: both indices are in the vector, which is not resized any more.
            unsafe { (*chain.add(index - 1)).next = chain.add(index) };
        }
        let mut failed_request: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: the chain, its scatter entries and the staging memory they point to
        // live until every completion was polled below.
        if unsafe { ibv_post_send(connection.queue_pair.queue_pair, chain, &mut failed_request) } != 0 {
            connection.broken.store(true, Ordering::Release);
            return Err(self.unreachable(format!("post work requests: {}", last_os_error())));
        }
        let deadline = Instant::now() + COMPLETION_TIMEOUT;
        let mut completed = 0;
        let mut first_failure: Option<(usize, ibv_wc_status::Type)> = None;
        // SAFETY: zeroed completion entries are valid outputs for ibv_poll_cq.
        let mut completions: Vec<ibv_wc> = (0..16).map(|_| unsafe { std::mem::zeroed::<ibv_wc>() }).collect();
        while completed < operations.len() {
            // SAFETY: valid completion queue and an output array of the stated length.
            let polled = unsafe {
                ibv_poll_cq(connection.queue_pair.completion_queue, completions.len() as i32, completions.as_mut_ptr())
            };
            if polled < 0 {
                connection.broken.store(true, Ordering::Release);
                return Err(self.unreachable("polling the completion queue failed".to_string()));
            }
            for completion in &completions[..polled as usize] {
                completed += 1;
                if completion.status != ibv_wc_status::IBV_WC_SUCCESS {
                    let index = completion.wr_id as usize;
                    if first_failure.is_none_or(|(first, _)| index < first) {
                        first_failure = Some((index, completion.status));
                    }
                }
            }
            if polled == 0 && Instant::now() > deadline {
                // Requests may still be outstanding: the queue pair cannot be reused.
                connection.broken.store(true, Ordering::Release);
                return Err(self.unreachable(format!("no completion within {COMPLETION_TIMEOUT:?}")));
            }
        }
        if first_failure.is_some() {
            connection.broken.store(true, Ordering::Release);
        }
        Ok(first_failure)
    }
}

impl RemoteRegion for RdmaRemoteRegion {
    fn node(&self) -> NodeId {
        self.connection.node
    }

    fn region(&self) -> RegionId {
        self.region
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn execute(&self, operations: &mut [Operation<'_>]) -> Result<(), FabricError> {
        check_batch_limits(operations)?;
        // Addressing errors are found before posting; the batch runs up to the first one.
        let invalid = operations.iter().position(|operation| self.check(operation).is_err());
        let posted = invalid.unwrap_or(operations.len());
        if posted > 0 {
            if self.connection.broken.load(Ordering::Acquire) {
                return Err(self.unreachable("the queue pair failed earlier; open the region again".to_string()));
            }
            let _batch = self.connection.post_lock.lock();
            let staging = &self.connection.staging;
            let mut staging_offsets = Vec::with_capacity(posted);
            let mut next_offset = 0u64;
            for operation in &operations[..posted] {
                staging_offsets.push(next_offset);
                if let Operation::Write { bytes, .. } = operation {
                    staging.write(next_offset, bytes).map_err(|error| error.at(self.node(), self.region))?;
                }
                next_offset += operation.length_bytes().div_ceil(8) * 8;
            }
            if let Some((index, status)) = self.post_and_wait(&operations[..posted], &staging_offsets)? {
                // SAFETY: ibv_wc_status_str returns a static C string for any status.
                let status_text = unsafe { CStr::from_ptr(ibv_wc_status_str(status)) }.to_string_lossy();
                return Err(if status == ibv_wc_status::IBV_WC_REM_ACCESS_ERR {
                    FabricError::UnknownRegion { node: self.node(), region: self.region }
                } else {
                    self.unreachable(format!("operation {index} failed: {status_text}"))
                });
            }
            for (operation, staging_offset) in operations[..posted].iter_mut().zip(&staging_offsets) {
                let outcome = match operation {
                    Operation::Read { buffer, .. } => staging.read(*staging_offset, buffer),
                    Operation::Write { .. } => Ok(()),
                    // The device places the previous value in host byte order.
                    Operation::CompareAndSwap { previous, .. } | Operation::FetchAdd { previous, .. } => {
                        let mut word = [0u8; 8];
                        let read = staging.read(*staging_offset, &mut word);
                        *previous = u64::from_ne_bytes(word);
                        read
                    }
                };
                outcome.map_err(|error| error.at(self.node(), self.region))?;
            }
        }
        match invalid {
            Some(index) => Err(self.check(&operations[index]).expect_err("found invalid above")),
            None => Ok(()),
        }
    }
}
