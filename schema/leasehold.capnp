# The Leasehold wire API, in Cap'n Proto.
#
# This file is the complete contract between a Leasehold engine node and its clients:
# any Cap'n Proto implementation (C++, Go, Python, Rust, ...) can talk to a node from
# this file alone. Nothing here is Rust-specific; the only opaque bytes are a plugin's own
# argument and output encodings, which the plugin defines (clients that do not know that
# encoding can use the JSON forms instead).
#
# Connecting: open a TCP connection to the node's client address and speak the two-party
# Cap'n Proto RPC protocol (standard framing, no packing). The bootstrap capability is a
# `Gate`, never the API itself:
#   1. connect and bootstrap the `Gate`;
#   2. call `Gate.authenticate` with the node's shared token (empty when the node has
#      none configured);
#   3. use the `Leasehold` capability it returns for everything else.
# Until step 2 succeeds the connection holds no capability but the `Gate`: calling a
# `Leasehold` method on the bootstrap capability fails (the server does not implement
# that interface there). A refused token is an RPC exception of type `failed` whose
# description is "authentication failed"; after three refusals on one connection the node
# closes it. (Nodes before the `Gate` bootstrapped `Leasehold` directly.)
#
# Layout of this file: the client API (`Leasehold` and the structs it uses) comes first.
# The peer API, through which the nodes of one cluster talk to each other, will be a
# separate interface in this same file so that both share the basic types (`Timestamp`,
# ...); it is not defined yet. Clients never need it.
#
# Compatibility: fields, union members, enumerants and methods are only ever added (with
# new ordinals), never renumbered or removed, so old clients keep working against newer
# nodes. A client should therefore be prepared to see an enumerant it does not know.

@0xb1c3955b8a64ccfa;

const requestIdBytesMax :UInt32 = 64;
# The longest request id (`Invocation.requestId`) a node accepts.

interface Gate {
  # The bootstrap capability of a client connection: the only thing an unauthenticated
  # client can reach.

  authenticate @0 (token :Data) -> (leasehold :Leasehold);
  # Presents the node's shared token and returns the client API. A wrong token is
  # refused with a `failed` exception ("authentication failed") and no capability; the
  # third refusal on one connection also closes it. A node without a configured token
  # accepts any token, including an empty one.
}

interface Leasehold {
  # The client API of one engine node, obtained from `Gate.authenticate`.

  deployPlugin @0 (library :Data) -> (result :DeployResult);
  # Deploys a plugin: `library` is the complete shared library (.so) built against the
  # Leasehold SDK. The node checks its ABI version, stores it in its data directory (so it
  # is reloaded after a restart) and loads it. A refused library (wrong ABI, not a
  # plugin, invalid declarations, ...) is reported in `result` rather than as an RPC
  # exception, so that a client can show the reason as is.

  listPlugins @1 () -> (plugins :List(PluginInfo));
  # Every plugin currently deployed on this node, in no particular order.

  invoke @2 (request :Invocation) -> (result :Result);
  # Runs one workflow instance as one serializable transaction and returns once its
  # outcome is durable. Committed and aborted outcomes are final; a rejected request did
  # not run at all (see `Rejection`).

  invokeMany @3 (requests :List(Invocation)) -> (result :InvokeManyResult);
  # Runs many independent requests sent in one message, each as its own transaction (this
  # is not one big transaction; there is no ordering guarantee between them). Sending many
  # requests per message is how a client reaches high throughput over one connection.

  readKey @4 (plugin :Text, table :Text, key :Data) -> (result :ReadResult);
  # Reads the committed value of one key of a plugin's table, outside any workflow. The
  # read is ordered after every request the node received before it, and answered once
  # that state is durable, so it never shows a write that a crash could still undo.

  status @5 () -> (status :NodeStatus);
  # The node's view of itself: identity, progress counters and deployed plugins.

  leaseTable @6 () -> (table :LeaseTable);
  # Which node holds which keys now, and where to reach each node: what a client needs
  # to send each request straight to the node that holds its keys (see
  # `Invocation.redirectIfElsewhere`). A single node answers a table of one node.

  openSession @7 () -> (result :OpenSessionResult);
  # Opens a client session: the cheap way to make retries safe when a client sends many
  # requests. The client numbers its requests 1, 2, 3, ... in `Invocation.session` and
  # tells the node, with each request, the lowest number it has no answer for yet; the
  # node keeps the outcomes of the session's requests until the client has acknowledged
  # them that way, so a retry (same session and sequence) gets the first outcome and
  # never runs twice, even across a restart of the node. Unlike `requestId`, a new
  # request costs the node no lookup in its stored outcomes. The session is durable
  # once this returns; it expires after being idle for the node's request id retention
  # (`request_id_retention_hours`), after which its requests are refused with
  # `unknownSession`. One session per client connection or thread is typical; its
  # requests may be in flight concurrently and in any order.
}

struct Invocation {
  # One request: run `workflow` of `plugin` with `arguments` as one transaction.

  plugin @0 :Text;
  # The name of a deployed plugin (as in `PluginInfo.name`).

  workflow @1 :Text;
  # The name of one of the plugin's workflows (as in `PluginInfo.workflows`).

  requestId @2 :Data;
  # Chosen by the client to make retries safe: a request sent again with the same id
  # (after a timeout or lost connection) gets the original result back and never runs
  # twice. At most `requestIdBytesMax` bytes. Empty means the request is not tracked, so
  # a retry may run it again.

  arguments :union {
    # The workflow's arguments, in one of two forms.

    encoded @3 :Data;
    # In the plugin's own binary encoding: the fastest form, for clients that share the
    # plugin's argument types.

    json @4 :Text;
    # As a JSON document, which the plugin converts before running. The committed result
    # then also carries the output as JSON (`Result.committed.outputJson`).
  }

  redirectIfElsewhere @5 :Bool;
  # Set by a client that chose this node from its cached lease table. When the request's
  # keys are mostly held elsewhere (the table was stale), the node answers
  # `Result.redirected` instead of forwarding the request itself; nothing ran, so the
  # client may send it, under the same request id, to the node named there. Unset (the
  # default), the node forwards such a request and the client does not notice.

  session @6 :SessionPosition;
  # Instead of `requestId` (set at most one of them): where this request sits in a
  # session opened with `Leasehold.openSession`. Unset means no session.
}

struct OpenSessionResult {
  union {
    session @0 :UInt64;
    # The new session's number, never 0.

    rejected @1 :Rejection;
    # No session was opened (kind `tooManySessions`, `storage` or `shuttingDown`).
  }
}

struct SessionPosition {
  # A request's place in a client session (see `Leasehold.openSession`).

  session @0 :UInt64;
  # The session, as `openSession` returned it.

  sequence @1 :UInt64;
  # The request's number in the session, from 1, each number used for one request; a
  # retry of the request sends the same number.

  firstUnanswered @2 :UInt64;
  # The lowest sequence number of the session whose answer the client does not have
  # yet (at least 1, at most `sequence`). The node forgets the outcomes below it; a
  # request numbered below it is refused with `sequenceAcknowledged`.
}

struct Timestamp {
  # A transaction's position in the global serial order. Timestamps compare
  # lexicographically: first `epoch`, then `node`, then `sequence`; a smaller timestamp
  # is serialized before a larger one.

  epoch @0 :UInt64;
  # The epoch (batch of transactions committed together) the transaction belongs to.

  node @1 :UInt16;
  # The node that sequenced the transaction (a single-node deployment is node 0).

  sequence @2 :UInt32;
  # The transaction's position among those the node sequenced in that epoch.
}

struct Result {
  # The outcome of one invocation.

  union {
    committed :group {
      # The transaction ran and all of its writes are durable.

      timestamp @0 :Timestamp;
      # Where the transaction sits in the serial order.

      output @1 :Data;
      # The workflow's output in the plugin's own binary encoding.

      outputJson @2 :Text;
      # The same output as JSON when the request sent its arguments as JSON; empty when it
      # used encoded arguments (JSON output is never empty, so the two cases do not mix).
    }

    aborted :group {
      # The transaction ran and was aborted: none of its writes happened. The abort is
      # final and recorded under the request id, so retrying returns this same result.

      timestamp @3 :Timestamp;
      # Where the aborted transaction sits in the serial order.

      kind @4 :AbortKind;
      # Why it aborted, for programs.

      message @5 :Text;
      # Why it aborted, for people: the plugin's message or the engine's explanation.
    }

    rejected @6 :Rejection;
    # The request was refused before it ran: nothing was executed or recorded, so the
    # client may fix the request and send it again, even under the same request id.

    redirected @7 :Redirect;
    # Only for a request with `redirectIfElsewhere` set: its keys are mostly held by
    # another node. Nothing ran or was recorded; send it there.
  }
}

struct Redirect {
  # Where to send a request whose keys this node does not hold.

  node @0 :UInt16;
  # The node that should run it (the holder of most of its keys, weighed with load as
  # for forwarding).

  clientAddress @1 :Text;
  # That node's client address, from the cluster file.

  leaseTableDigest @2 :UInt64;
  # The digest of the lease table the decision used (as in `LeaseTable.digest`): a
  # client whose cached table has another digest should fetch `leaseTable` again.
}

struct LeaseTable {
  # Where every key is held. A key's storage key is its table's `TableInfo.tableId` in
  # big-endian order followed by the key's bytes. Its holder is the node `moved` names
  # for that storage key, or else its home node: the 64-bit FNV-1a hash of the storage
  # key (offset basis 0xcbf29ce484222325, prime 0x100000001b3) modulo `nodeCount`.

  nodeCount @0 :UInt16;
  # The number of nodes of the cluster (1 for a single node).

  digest @1 :UInt64;
  # Equal for tables that place every key alike; redirects carry it too.

  nodes @2 :List(NodeAddress);
  # Every node's client address, by node id.

  moved @3 :List(MovedLease);
  # The keys whose lease moved away from their home node (affinity placement).
}

struct NodeAddress {
  node @0 :UInt16;
  clientAddress @1 :Text;
}

struct MovedLease {
  storageKey @0 :Data;
  holder @1 :UInt16;
}

enum AbortKind {
  # Why a transaction that ran was aborted.

  logic @0;
  # The plugin refused, for example because an account has insufficient funds.

  undeclaredAccess @1;
  # A function touched a key outside the access set its plugin declared for this request.

  pluginPanic @2;
  # A function of the plugin panicked; the engine contained it.

  valueTooLarge @3;
  # A function wrote a value larger than its table's `valueBytesMax`.

  pluginTimedOut @4;
  # A function ran longer than the node's `plugin_call_abandon_ms`; the node abandoned
  # the call (nothing of the transaction took effect) and quarantined the plugin.
}

struct Rejection {
  # Why a request was refused before it ran. Nothing was executed or recorded.

  kind @0 :RejectionKind;
  # The reason, for programs.

  message @1 :Text;
  # The reason, for people, with the details (names, limits) filled in.
}

enum RejectionKind {
  # The reasons a request can be refused before it runs.

  unknownPlugin @0;
  # No plugin of that name is deployed.

  unknownWorkflow @1;
  # The plugin has no workflow of that name.

  unknownTable @2;
  # The plugin has no table of that name.

  badArguments @3;
  # The plugin could not decode the arguments (binary or JSON).

  planFailed @4;
  # The plugin failed while computing the request's access set from its arguments.

  requestIdTooLong @5;
  # The request id is longer than `requestIdBytesMax` bytes.

  accessSetTooLarge @6;
  # The request would touch more keys than the node allows in one transaction.

  keyTooLong @7;
  # A key is longer than the node allows.

  shuttingDown @8;
  # The node is shutting down; send the request to it again later or to another node.

  storage @9;
  # The node's storage failed; the message has the details.

  malformedRequest @10;
  # The request was not well formed (for example text that is not valid UTF-8 or a union
  # member this node does not know).

  tooManyInvocations @11;
  # An `invokeMany` call carried more invocations than the node accepts in one message
  # (see `InvokeManyResult.rejected`).

  retry @12;
  # A node of the cluster restarted before the request's epoch was durable on every node,
  # so the cluster rolled that epoch back: nothing of the request took effect. Send it
  # again with the same request id.

  pluginQuarantined @13;
  # A call of the plugin ran so long that the node abandoned it; the plugin takes no calls
  # until a new version of it is deployed.

  unknownSession @14;
  # `Invocation.session` names a session this node does not have open: never opened
  # here, or expired after being idle for the retention. Its unanswered requests may or
  # may not have run; open a new session for new requests.

  sequenceAcknowledged @15;
  # The request's sequence number is below the session's first unanswered number that
  # the client itself sent before: its outcome was forgotten as the client asked.

  sessionFull @16;
  # The session (or all sessions of the node together) holds as many unacknowledged
  # outcomes as the node allows: the client must send a higher `firstUnanswered` (it has
  # the answers) before new requests.

  tooManySessions @17;
  # `openSession` only: as many sessions are open on this node as it allows.
}

struct InvokeManyResult {
  # The outcome of an `invokeMany` call.

  union {
    results @0 :List(Result);
    # The call was accepted: exactly one result per request, in request order.

    rejected @1 :Rejection;
    # The whole call was refused before any of its requests ran: it carried more
    # invocations than the node accepts in one message (kind `tooManyInvocations`: send
    # them again in smaller calls), or the node is shutting down (kind `shuttingDown`).
    # This is a single rejection rather than one per request so that a small message
    # cannot make the node build a huge reply.
  }
}

struct ReadResult {
  # The result of reading one key.

  union {
    found :group {
      # The key exists.

      value @0 :Data;
      # Its committed value (possibly empty).
    }

    absent @1 :Void;
    # The key holds no value.

    rejected @2 :Rejection;
    # The read was refused (unknown plugin or table, key too long, ...).
  }
}

struct DeployResult {
  # The result of deploying a plugin.

  union {
    info @0 :PluginInfo;
    # The library was accepted and is now serving requests; this is what it declares.

    error @1 :Text;
    # The library was refused; the text explains why, for people.
  }
}

struct PluginInfo {
  # What a deployed plugin declares.

  name @0 :Text;
  # The name requests use to address the plugin.

  version @1 :Text;
  # The plugin's own version string.

  buildInfo @2 :Text;
  # How the library was built (SDK and ABI version), for diagnosing mismatches.

  digest @3 :Text;
  # The content hash of the library, in hexadecimal, which tells two builds of the same
  # version apart.

  tables @4 :List(TableInfo);
  # The tables (key spaces) the plugin declares.

  workflows @5 :List(Text);
  # The names of the workflows a request may invoke.
}

struct TableInfo {
  # One table of a plugin.

  name @0 :Text;
  # The name reads use to address the table.

  valueBytesMax @1 :UInt32;
  # The largest value the table stores; larger writes abort with `valueTooLarge`.

  tableId @2 :UInt32;
  # The table's number in storage keys (see `LeaseTable`), the same on every node.
}

struct NodeStatus {
  # A node's view of itself.

  node @0 :UInt16;
  # The node's id within its cluster (a single-node deployment is node 0).

  version @1 :Text;
  # The engine's version.

  durableEpoch @2 :UInt64;
  # The newest epoch whose transactions are all durable.

  committedTotal @3 :UInt64;
  # Transactions committed since the node started.

  abortedTotal @4 :UInt64;
  # Transactions aborted since the node started.

  rejectedTotal @5 :UInt64;
  # Requests the node rejected before running them, since it started.

  epochsTotal @6 :UInt64;
  # Epochs committed since the node started.

  residentKeys @7 :UInt64;
  # Keys currently held in the node's memory.

  plugins @8 :List(Text);
  # The names of the deployed plugins.

  uptimeMs @9 :UInt64;
  # Milliseconds since the node started.

  cc @10 :Text;
  # The concurrency control protocol the node runs (the lease protocol by default, or one
  # of the baselines used for comparison).

  fsync @11 :Text;
  # When epochs are forced to disk: "every-epoch" (an acknowledged transaction survives a
  # machine crash) or "asynchronous" (it survives a process crash).
  clusterNodes @12 :UInt16;
  # Nodes in the node's cluster (1 for a single node).

  clusterGeneration @13 :UInt64;
  # The generation of the cluster view the node runs in (the sum of every node's
  # incarnation); it grows whenever a node restarts. 0 for a single node.

  clusterSynced @14 :Bool;
  # Whether the node agreed on the current view with every peer and runs epochs (a
  # node waiting for a restarted peer shows false). Always true for a single node.

  leaseTableDigest @15 :UInt64;
  # A digest of the node's lease table: nodes that agree on every key's holder show the
  # same digest.

  leasesLent @16 :UInt64;
  # Keys of this node lent to another node for a running transaction (0 when idle).

  localAccesses @17 :UInt64;
  # Key accesses of this node's transactions to keys it holds, since it started.

  remoteAccesses @18 :UInt64;
  # Key accesses of this node's transactions to keys other nodes hold, since it started.

  fencedTotal @19 :UInt64;
  # Write-backs this node refused because they carried a stale lease (fencing).

  fabric @20 :Text;
  # The fabric backend between the nodes ("shm", "tcp", "rdma"), or "none" for a single
  # node.

  concurrencyRetriesTotal @21 :UInt64;
  # Transactions the concurrency control aborted and ran again since the node started
  # (2pl: died under wait-die; occ: a write lock or the read validation failed). Always 0
  # under leases, which never abort for concurrency. Logic aborts are in abortedTotal.

  leaseMovesTotal @22 :UInt64;
  # Leases this node gave up to another node by affinity placement, since it started.

  bytesMigratedTotal @23 :UInt64;
  # Value bytes this node sent along with the leases it gave up, since it started.

  forwardedTotal @24 :UInt64;
  # Requests this node received and forwarded to the node holding most of their keys
  # (request routing), since it started.

  forwardsReceivedTotal @25 :UInt64;
  # Requests other nodes forwarded to this node, which ran them, since it started.

  transactionsDecayed @26 :Float64;
  # This node's decayed count of transactions run (with the placement half-life): the
  # load that routing weighs against affinity. 0 for a single node.

  redirectedTotal @27 :UInt64;
  # Requests with `Invocation.redirectIfElsewhere` this node answered with a redirect
  # (the client's lease table was stale), since it started.

  overduePluginCalls @28 :List(Text);
  # Plugin function calls running longer than the node's `plugin_call_warn_ms`, one line
  # each ("plugin version: function running for N s"). Native plugin code cannot be
  # stopped: such a call holds its executor thread, and its epoch unless the node abandons
  # it (`plugin_call_abandon_ms`).

  abandonedPluginCalls @29 :UInt64;
  # Plugin function calls the node abandoned after `plugin_call_abandon_ms` (their
  # transactions aborted as `pluginTimedOut`, their plugins quarantined), since it started.
}
