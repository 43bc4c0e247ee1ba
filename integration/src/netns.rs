//! A private network for cluster tests that cut links: [`NetworkLab`] owns one Linux
//! network namespace per node and a "switch" namespace with a bridge that joins them,
//! so a test can partition one node (take its link down) while its engine keeps running,
//! and heal it again. It also owns entering a node's namespace from a test thread
//! ([`enter_namespace`], [`connect_in`]), since a node's addresses exist only there.
//!
//! Layout (for a run with prefix `lh<pid>-<n>`):
//!
//! ```text
//!  lh<pid>-<n>-n0            lh<pid>-<n>-sw              lh<pid>-<n>-n1
//!  eth0 198.18.0.1 ══ veth ══ n0 ─┐                 ┌─ n1 ══ veth ══ eth0 198.18.0.2
//!                                 └──── br0 ───────┘   ...
//! ```
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking), so they can
//! never collide with a real network. Both ends of every veth pair are created directly
//! in their namespaces: the root namespace never sees an interface, address or route of
//! the lab, and no traffic leaves it. A partition sets the node's bridge-side veth down:
//! the node's frames are dropped at the bridge and nothing reaches it, but its processes,
//! sockets and the clients inside its namespace go on as before.
//!
//! Creating the lab needs root and a working `ip netns`; where the machine does not allow
//! it, [`NetworkLab::create`] says why, so that a test can report itself skipped.
//! Dropping the lab deletes every namespace it created (also when a test panics); a
//! namespace whose processes still run disappears once they exit.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

extern "C" {
    // setns(2): moves the calling thread (only it) into the namespace `fd` refers to.
    fn setns(fd: i32, nstype: i32) -> i32;
    fn geteuid() -> u32;
}

/// `CLONE_NEWNET` from <sched.h>: the namespace passed to `setns` must be a network one.
const CLONE_NEWNET: i32 = 0x4000_0000;
/// A locally administered unicast hardware address no interface of a lab has: frames sent
/// to it reach no one.
const UNUSED_HARDWARE_ADDRESS: &str = "02:00:00:00:00:fe";
/// Where `ip netns add` bind-mounts the namespaces it names.
const NETNS_DIRECTORY: &str = "/var/run/netns";

/// Per-node network namespaces joined by a bridge, deleted on drop.
pub struct NetworkLab {
    /// `lh<pid>-<counter>`: unique per test run and lab, so parallel tests and runs left
    /// over from a killed test never meet.
    prefix: String,
    node_count: usize,
    /// Every namespace created so far (node namespaces, then the switch), so that a lab
    /// that fails half-way is still cleaned up by its drop.
    created: Vec<String>,
}

impl NetworkLab {
    /// Creates namespaces for `node_count` nodes (at most 250) and the switch joining
    /// them. Returns why not when the machine does not allow it (not root, `ip`
    /// missing, namespaces refused).
    pub fn create(node_count: usize) -> Result<NetworkLab, String> {
        assert!((1..=250).contains(&node_count), "a lab has 1 to 250 nodes");
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { geteuid() } != 0 {
            return Err("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => return Err(format!("`ip -V` failed: {}", String::from_utf8_lossy(&output.stderr).trim())),
            Err(error) => return Err(format!("`ip` (iproute2) is not available: {error}")),
        }
        static LABS: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("lh{}-{}", std::process::id(), LABS.fetch_add(1, Ordering::Relaxed));
        let mut lab = NetworkLab { prefix, node_count, created: Vec::new() };
        lab.build()?;
        // Tests reach the nodes by entering their namespaces: find out now if that is refused.
        within_namespace(&lab.namespace(0), || ())?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), String> {
        let switch = self.switch_namespace();
        run_ip(&["netns", "add", &switch])?;
        self.created.push(switch.clone());
        run_ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        run_ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        run_ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for node in 0..self.node_count {
            let namespace = self.namespace(node).to_string();
            run_ip(&["netns", "add", &namespace])?;
            self.created.push(namespace.clone());
            run_ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            // Both ends are born in their namespaces, never in the root namespace.
            let port = Self::switch_port(node);
            run_ip(&[
                "-n", &namespace, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &switch,
            ])?;
            run_ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            run_ip(&["-n", &switch, "link", "set", &port, "up"])?;
            let address = format!("{}/24", self.address(node));
            run_ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            run_ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// The namespace node `node` runs in.
    pub fn namespace(&self, node: usize) -> String {
        assert!(node < self.node_count, "node {node} is not in the lab");
        format!("{}-n{node}", self.prefix)
    }

    fn switch_namespace(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The bridge-side end of node `node`'s veth pair (in the switch namespace).
    fn switch_port(node: usize) -> String {
        format!("n{node}")
    }

    /// Node `node`'s address, the only one of its namespace besides loopback.
    pub fn address(&self, node: usize) -> Ipv4Addr {
        assert!(node < self.node_count, "node {node} is not in the lab");
        Ipv4Addr::new(198, 18, 0, node as u8 + 1)
    }

    /// The words that run a command inside node `node`'s namespace when put in front of
    /// it (`ip netns exec` enters the namespace and then execs the command, so the
    /// process id is the command's own).
    pub fn command_prefix(&self, node: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.namespace(node)]
    }

    /// Cuts node `node` off: its bridge port goes down, so nothing it sends reaches
    /// anyone and nothing reaches it. Its processes keep running.
    pub fn partition(&self, node: usize) -> Result<(), String> {
        run_ip(&["-n", &self.switch_namespace(), "link", "set", &Self::switch_port(node), "down"])
    }

    /// Connects node `node` again.
    pub fn heal(&self, node: usize) -> Result<(), String> {
        run_ip(&["-n", &self.switch_namespace(), "link", "set", &Self::switch_port(node), "up"])
    }

    /// Cuts the link between nodes `a` and `b` only: each gets a permanent neighbour entry
    /// that sends the other's address to a hardware address nobody has, so their frames to
    /// each other are flooded by the bridge and dropped by every receiver, silently (as a
    /// cut cable, unlike an unreachable route, which fails sends at once). Both keep
    /// talking to every other node.
    pub fn cut_between(&self, a: usize, b: usize) -> Result<(), String> {
        assert_ne!(a, b, "a node is not cut from itself");
        for (from, to) in [(a, b), (b, a)] {
            let address = self.address(to).to_string();
            run_ip(&[
                "-n",
                &self.namespace(from),
                "neigh",
                "replace",
                &address,
                "lladdr",
                UNUSED_HARDWARE_ADDRESS,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Heals a [`NetworkLab::cut_between`]: the neighbour entries go, and address
    /// resolution finds the real ones again.
    pub fn heal_between(&self, a: usize, b: usize) -> Result<(), String> {
        for (from, to) in [(a, b), (b, a)] {
            let address = self.address(to).to_string();
            run_ip(&["-n", &self.namespace(from), "neigh", "del", &address, "dev", "eth0"])?;
        }
        Ok(())
    }

    /// Moves the calling thread into node `node`'s namespace for good (a test client
    /// thread that talks only to that node).
    pub fn enter(&self, node: usize) -> Result<(), String> {
        enter_namespace(&self.namespace(node))
    }
}

impl Drop for NetworkLab {
    fn drop(&mut self) {
        // Deleting a node namespace destroys its veth pair, the bridge port included.
        for namespace in self.created.drain(..).rev() {
            if let Err(error) = run_ip(&["netns", "delete", &namespace]) {
                eprintln!("network lab: {error}");
            }
        }
    }
}

/// Runs `ip` with `arguments`; the error names the command and what `ip` printed.
fn run_ip(arguments: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(arguments).output().map_err(|error| format!("cannot run `ip`: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", arguments.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn set_namespace(file: &File, what: &str) -> Result<(), String> {
    // SAFETY: setns(2) on a file descriptor we own; it changes only this thread's network
    // namespace (allowed in a multi-threaded process, unlike mount or user namespaces).
    if unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) } != 0 {
        return Err(format!("setns into {what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Moves the calling thread into the named namespace (as `ip netns` names it). Sockets
/// created afterwards by this thread, and threads it starts, live there; sockets
/// created before stay where they were.
pub fn enter_namespace(name: &str) -> Result<(), String> {
    let path = format!("{NETNS_DIRECTORY}/{name}");
    let file = File::open(&path).map_err(|error| format!("open {path}: {error}"))?;
    set_namespace(&file, &path)
}

/// Runs `f` with the calling thread inside the named namespace, then returns the thread
/// to the namespace it was in. What `f` connects stays connected in the namespace (a
/// socket belongs to the namespace it was created in), so a test can talk to a node from
/// its main thread.
pub fn within_namespace<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    let original = File::open("/proc/thread-self/ns/net").map_err(|error| format!("open own namespace: {error}"))?;
    enter_namespace(name)?;
    struct Return(File);
    impl Drop for Return {
        fn drop(&mut self) {
            // Also on unwinding: a thread left in a lab namespace would see no network.
            if let Err(error) = set_namespace(&self.0, "the original namespace") {
                if !std::thread::panicking() {
                    panic!("cannot return to the original network namespace: {error}");
                }
            }
        }
    }
    let _return = Return(original);
    Ok(f())
}

/// A blocking client connected from inside namespace `name` (which the calling thread
/// leaves again right after connecting).
pub fn connect_in(
    name: &str,
    address: std::net::SocketAddr,
) -> Result<leasehold_client::BlockingClient, leasehold_client::ClientError> {
    within_namespace(name, || leasehold_client::BlockingClient::connect(address))
        .unwrap_or_else(|error| panic!("cannot enter network namespace {name}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    /// Two nodes reach each other through the bridge, not while one is partitioned, and
    /// again once it is healed; the namespaces are gone after the drop.
    #[test]
    fn a_partition_cuts_a_node_off_until_healed() {
        let lab = match NetworkLab::create(2) {
            Ok(lab) => lab,
            Err(reason) => {
                println!("skipped: {reason}");
                return;
            }
        };
        let server: SocketAddr = (lab.address(1), 7000).into();
        let listener = within_namespace(&lab.namespace(1), || TcpListener::bind(server)).expect("enter").expect("bind");
        let echo = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut byte = [0u8; 1];
            while stream.read_exact(&mut byte).is_ok() {
                stream.write_all(&byte).expect("echo");
            }
        });
        let mut client =
            within_namespace(&lab.namespace(0), || TcpStream::connect_timeout(&server, Duration::from_secs(5)))
                .expect("enter")
                .expect("connect through the bridge");
        client.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut byte = [0u8; 1];
        client.write_all(b"a").expect("send");
        client.read_exact(&mut byte).expect("echoed");
        assert_eq!(&byte, b"a");

        lab.partition(1).expect("partition");
        client.write_all(b"b").expect("queued while partitioned");
        assert!(client.read_exact(&mut byte).is_err(), "nothing gets through a partition");
        lab.heal(1).expect("heal");
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        client.read_exact(&mut byte).expect("TCP retransmits once healed");
        assert_eq!(&byte, b"b");

        drop(client);
        echo.join().expect("echo thread");
        let names: Vec<String> = (0..2).map(|node| lab.namespace(node)).collect();
        drop(lab);
        for name in names {
            assert!(!std::path::Path::new(NETNS_DIRECTORY).join(name).exists(), "namespace deleted");
        }
    }
}
