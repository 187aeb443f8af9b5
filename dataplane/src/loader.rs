//! [`Dataplane`]: the loaded eBPF object, its programs and where they are attached.
//!
//! Maps listed in `shoal_common::PINNED_MAPS` are pinned by name under the node's pin
//! directory, so a restarted agent re-adopts them (and established flows survive the restart).
//!
//! The underlay XDP link is pinned next to the maps (`xdp_link`), so published ports keep
//! being served while the agent is down (stopped or killed); a restarted agent swaps its
//! freshly loaded program into that link in place. It goes when the pin is removed (with the
//! node's pin directory) or its interface goes. Without a pin directory (tests, benches) the
//! link is the [`Dataplane`]'s and goes with it. The tc programs on task-facing veths and on the mesh's reply hooks are
//! classic clsact filters instead, owned by the interface: they keep running, on the pinned
//! maps, while the agent is down (even after SIGKILL), go away with the interface, and a
//! restarted agent swaps its programs in with one netlink replace each. That is what keeps
//! VIP and published-port flows alive across agent restarts.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupSockAddr, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        xdp::XdpLink,
    },
};
use shoal_common::{PINNED_MAPS, programs, stats::STATS_MAP};
use tracing::info;

use crate::{
    carry_over::Carried,
    error::Error,
    lb::LoadBalancer,
    mesh::Mesh,
    object,
    programs::{program_error, program_mut},
    stats::HookCounters,
    table_sizes::TableSizes,
};

/// The loaded eBPF object. Dropping it detaches the programs it owns (not the pinned XDP link,
/// nor the filters interfaces own).
pub struct Dataplane {
    ebpf: Ebpf,
    /// The VIP maps, taken out of `ebpf`.
    lb: LoadBalancer,
    /// The published ports' maps, taken out of `ebpf`.
    mesh: Mesh,
    /// Where the maps are pinned, or `None` for a private, unpinned instance (tests, benches).
    pin_dir: Option<PathBuf>,
    /// The underlay XDP link, pinned under `pin_dir`. Dropping it closes our fd only: the
    /// pin keeps the program attached.
    underlay_xdp: Option<PinnedLink>,
    /// The capacities the tables were made with.
    sizes: TableSizes,
    /// Flow tables of the last run's size still being copied into this run's (`carry_over`).
    carried: Carried,
}

/// How the underlay XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// The kernel chooses: native where the driver has it (veth does), generic otherwise.
    #[default]
    Auto,
    Native,
    /// In the network stack (`XDP_TX` becomes an ordinary transmit).
    Generic,
}

impl XdpAttachMode {
    fn aya(self) -> XdpMode {
        match self {
            Self::Auto => XdpMode::Default,
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

/// Pins of maps older agents had and this one replaced: `SHOAL_MESH_PORTS` (a hash, now the
/// `SHOAL_MESH_PORT_INDEX` array).
const RETIRED_PINS: &[&str] = &["SHOAL_MESH_PORTS"];

/// The pinned underlay XDP link's name in the pin directory.
pub const XDP_LINK_PIN: &str = "xdp_link";

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug)]
pub struct TestRunOutcome {
    /// The program's verdict (`XDP_*` or `TC_ACT_*`).
    pub return_value: u32,
    /// The frame as the program left it.
    pub data_out: Vec<u8>,
    /// Mean time per run, as measured by the kernel.
    pub duration: Duration,
}

const XDP_PROGRAMS: [&str; 3] = [
    programs::XDP_UNDERLAY,
    programs::XDP_FLOOR,
    programs::FLOW_CLOCK,
];
const TC_PROGRAMS: [&str; 5] = [
    programs::TC_INGRESS,
    programs::TC_EGRESS,
    programs::TC_MESH_REPLY,
    programs::TC_FLOOR,
    programs::TC_PARSE_FLOOR,
];

/// Where shoal's filter sits on a task-facing veth's clsact hooks (`tc filter show dev ...
/// ingress` lists it as `pref 1 bpf ... handle 0x1`).
const TASK_FILTER_PRIORITY: u16 = 1;
const TASK_FILTER_HANDLE: TcHandle = TcHandle::new(0, 1);

impl Dataplane {
    /// Loads the embedded object and every program in it into the kernel. With `pin_dir`, maps
    /// are pinned (or re-adopted) there; the directory is created if needed. The tables have
    /// the object's own capacities.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, Error> {
        Self::load_sized(pin_dir, TableSizes::default())
    }

    /// [`Dataplane::load`] with the capacities `sizes` (a pinned table of another size, left
    /// by an earlier run, is replaced: see `pins`).
    pub fn load_sized(pin_dir: Option<&Path>, sizes: TableSizes) -> Result<Self, Error> {
        let bytes = object::bytes()?;
        let mut loader = EbpfLoader::new();
        for (name, entries) in sizes.resized() {
            loader.map_max_entries(name, entries);
        }
        let pin_paths: Vec<(&str, PathBuf)> = match pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    what: "creating pin directory",
                    path: dir.to_path_buf(),
                    source,
                })?;
                PINNED_MAPS
                    .iter()
                    .map(|name| (*name, dir.join(name)))
                    .collect()
            }
            None => Vec::new(),
        };
        // Pinned maps are re-adopted when the pin exists and holds the map this object
        // defines (`pins`), created and pinned otherwise. The object marks no map as pinned,
        // so without a directory every map stays private.
        let resized_tables = match pin_dir {
            Some(dir) => crate::pins::drop_stale(bytes, dir, PINNED_MAPS, &sizes.resized())?,
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(bytes)?;
        // Maps an older agent pinned under names this one no longer uses: nothing reads them.
        if let Some(dir) = pin_dir {
            for name in RETIRED_PINS {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        for name in XDP_PROGRAMS {
            let program = program_mut::<Xdp>(&mut ebpf, name)?;
            load_retrying(name, || program.load())?;
        }
        for name in TC_PROGRAMS {
            let program = program_mut::<SchedClassifier>(&mut ebpf, name)?;
            load_retrying(name, || program.load())?;
        }
        // Loaded (so the verifier checks them everywhere), attached only by the agent.
        for name in crate::sock_lb::PROGRAMS {
            let program = program_mut::<CgroupSockAddr>(&mut ebpf, name)?;
            load_retrying(name, || program.load())?;
        }
        let clock = crate::flow_clock::FlowClock::calibrate(&ebpf)?;
        let lb = LoadBalancer::adopt(&mut ebpf, clock)?;
        let mesh = Mesh::adopt(&mut ebpf, clock)?;
        let carried = match pin_dir {
            Some(dir) => Carried::start(dir, resized_tables),
            None => Carried::default(),
        };
        Ok(Self {
            ebpf,
            lb,
            mesh,
            pin_dir: pin_dir.map(Path::to_path_buf),
            underlay_xdp: None,
            sizes,
            carried,
        })
    }

    /// The capacities the tables were made with.
    pub fn table_sizes(&self) -> TableSizes {
        self.sizes
    }

    /// One round of carrying flow tables resized at this load over (`carry_over`): what the
    /// last run's programs, while they still run, changed in the old tables is copied into
    /// the new ones, and the old tables no program uses any more are released. The agent
    /// calls it with its flow upkeep. Returns how many old tables are still carried (0: none,
    /// or all done).
    pub fn carry_over(&mut self) -> usize {
        self.carried.round()
    }

    /// The published ports' maps.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub fn mesh_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    /// The service VIP load balancer (its maps and counters).
    pub fn lb(&self) -> &LoadBalancer {
        &self.lb
    }

    pub fn lb_mut(&mut self) -> &mut LoadBalancer {
        &mut self.lb
    }

    /// Where the maps are pinned, if they are.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Attaches the socket-level balancer (node-local clients of published ports; tasks'
    /// clients of VIPs once [`Dataplane::serve_tasks_at_socket`] names them) to the cgroup v2
    /// root `cgroup`, for the calling thread's network namespace (see `sock_lb`).
    pub fn attach_socket_lb(&mut self, cgroup: &Path) -> Result<(), Error> {
        crate::sock_lb::attach(&mut self.ebpf, cgroup)
    }

    /// Attaches the do-nothing `connect4` program to the cgroup v2 root `cgroup` instead of the
    /// socket-level balancer: the floor benchmarks compare it with.
    pub fn attach_connect4_floor(&mut self, cgroup: &Path) -> Result<(), Error> {
        crate::sock_lb::attach_floor(&mut self.ebpf, cgroup)
    }

    /// Has the socket-level balancer serve the tasks below `subtree` (the node's task cgroup
    /// subtree in the cgroup v2 hierarchy) too: their connections to VIPs are balanced at the
    /// socket. Returns the subtree's cgroup ID (see `sock_lb`).
    pub fn serve_tasks_at_socket(&mut self, subtree: &Path) -> Result<u64, Error> {
        crate::sock_lb::serve_tasks(&mut self.ebpf, subtree)
    }

    /// Destroys the TCP and connected UDP sockets in the network namespace at `netns` that
    /// the socket-level balancer sent to one of `backends` (gone from the load balancer):
    /// they fail with `ECONNABORTED` instead of hanging (see `sock_destroy`).
    pub fn destroy_balanced_sockets(
        &self,
        netns: &Path,
        backends: &std::collections::BTreeSet<std::net::Ipv4Addr>,
    ) -> Result<crate::sock_destroy::Destroyed, Error> {
        crate::sock_destroy::destroy_balanced(&self.ebpf, netns, backends)
    }

    /// Attaches the underlay XDP program to `interface` (in the calling thread's netns), in
    /// `mode`. With a pin directory the link is pinned there; a link an earlier agent left
    /// pinned gets this program swapped in, without a moment unattached (in the mode it was
    /// attached with).
    pub fn attach_underlay_xdp(
        &mut self,
        interface: &str,
        mode: XdpAttachMode,
    ) -> Result<(), Error> {
        let name = programs::XDP_UNDERLAY;
        let pin = self.pin_dir.as_ref().map(|d| d.join(XDP_LINK_PIN));
        let program = program_mut::<Xdp>(&mut self.ebpf, name)?;
        if let Some(pin) = &pin
            && let Ok(pinned) = PinnedLink::from_pin(pin)
        {
            let replaced = XdpLink::try_from(FdLink::from(pinned))
                .ok()
                .and_then(|link| program.attach_to_link(link).ok());
            if let Some(id) = replaced {
                // The program owns the link now; pin it afresh (our fd keeps it attached
                // meanwhile), ours to detach.
                let link = program
                    .take_link(id)
                    .map_err(|e| attach_error(name, interface, e))?;
                let _ = std::fs::remove_file(pin);
                self.underlay_xdp = Some(pin_link(link, pin, name, interface)?);
                info!(
                    interface,
                    program = name,
                    "XDP swapped into the pinned link"
                );
                return Ok(());
            }
            // A link whose interface is gone: start afresh.
            let _ = std::fs::remove_file(pin);
        }
        let id = program
            .attach(interface, mode.aya())
            .map_err(|e| attach_error(name, interface, e))?;
        if let Some(pin) = &pin {
            let link = program
                .take_link(id)
                .map_err(|e| attach_error(name, interface, e))?;
            self.underlay_xdp = Some(pin_link(link, pin, name, interface)?);
        }
        info!(interface, program = name, "attached XDP");
        Ok(())
    }

    /// Attaches the XDP floor (pass everything) to `interface` (in the calling thread's netns),
    /// for as long as this [`Dataplane`] lives. What a veth needs to take frames another veth
    /// sends with `XDP_TX` (test and benchmark underlays; a real NIC needs nothing).
    pub fn attach_xdp_floor(&mut self, interface: &str) -> Result<(), Error> {
        let name = programs::XDP_FLOOR;
        program_mut::<Xdp>(&mut self.ebpf, name)?
            .attach(interface, XdpMode::default())
            .map_err(|e| attach_error(name, interface, e))?;
        Ok(())
    }

    /// Attaches the mesh's reply program to the ingress side of `interface` (in the calling
    /// thread's netns: the node's ingress interface, or a host-mode task's gateway-bridge
    /// port), as a filter the interface owns (see [`Dataplane::attach_task_veth`]).
    pub fn attach_mesh_reply(&mut self, interface: &str) -> Result<(), Error> {
        let _ = tc::qdisc_add_clsact(interface);
        self.attach_owned_filter(interface, programs::TC_MESH_REPLY, TcAttachType::Ingress)
    }

    /// Attaches the tc programs to both directions of `interface` (in the calling thread's
    /// netns). On this kernel aya uses TCX links, which need no clsact qdisc.
    pub fn attach_tc(&mut self, interface: &str) -> Result<(), Error> {
        for (name, direction) in [
            (programs::TC_INGRESS, TcAttachType::Ingress),
            (programs::TC_EGRESS, TcAttachType::Egress),
        ] {
            program_mut::<SchedClassifier>(&mut self.ebpf, name)?
                .attach(interface, direction)
                .map_err(|e| attach_error(name, interface, e))?;
        }
        info!(interface, "attached tc ingress and egress");
        Ok(())
    }

    /// Attaches the task-facing programs to both directions of `interface` (in the calling
    /// thread's netns; the sandbox end of a task's veth) as clsact filters the interface owns:
    /// a filter left by an earlier agent is replaced in place, so traffic never goes
    /// unfiltered. Idempotent.
    pub fn attach_task_veth(&mut self, interface: &str) -> Result<(), Error> {
        // Fails when the qdisc exists already, which is the usual case after a restart; a
        // missing qdisc shows as the attach error below.
        let _ = tc::qdisc_add_clsact(interface);
        for (name, direction) in [
            (programs::TC_INGRESS, TcAttachType::Ingress),
            (programs::TC_EGRESS, TcAttachType::Egress),
        ] {
            self.attach_owned_filter(interface, name, direction)?;
        }
        Ok(())
    }

    /// Puts `name` on one hook of `interface` as shoal's filter there (pref 1, handle 1),
    /// replacing an earlier one in place; the filter belongs to the interface.
    fn attach_owned_filter(
        &mut self,
        interface: &str,
        name: &'static str,
        direction: TcAttachType,
    ) -> Result<(), Error> {
        let program = program_mut::<SchedClassifier>(&mut self.ebpf, name)?;
        let existing = SchedClassifierLink::attached(
            interface,
            direction,
            TASK_FILTER_PRIORITY,
            TASK_FILTER_HANDLE,
            None,
        )
        .map_err(|e| attach_error(name, interface, tc::TcError::IoError(e).into()))?;
        let link_id = match program.attach_to_link(existing) {
            Ok(id) => id,
            // Nothing to replace: a new interface.
            Err(_) => program
                .attach_with_options(
                    interface,
                    direction,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: TASK_FILTER_PRIORITY,
                        handle: TASK_FILTER_HANDLE,
                        classid: None,
                    }),
                )
                .map_err(|e| attach_error(name, interface, e))?,
        };
        // The filter belongs to the interface, not to this process: forgetting the link
        // keeps aya from detaching it when the program is dropped.
        let link = program
            .take_link(link_id)
            .map_err(|e| attach_error(name, interface, e))?;
        std::mem::forget(link);
        Ok(())
    }

    /// Packet and byte counters of every hook, summed over CPUs.
    pub fn counters(&self) -> Result<HookCounters, Error> {
        let map = self
            .ebpf
            .map(STATS_MAP)
            .ok_or(Error::MissingMap { name: STATS_MAP })?;
        HookCounters::read(map)
    }

    /// Runs `program` on `frame` with `BPF_PROG_TEST_RUN`, `repeat` times (at least once).
    pub fn test_run(
        &self,
        program: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, Error> {
        self.test_run_on(program, frame, repeat, None)
    }

    /// [`Dataplane::test_run`] for an XDP program, as if `frame` arrived on the interface
    /// `ingress_ifindex` of the calling thread's network namespace (its routes are what
    /// `bpf_fib_lookup` sees); `None`: on no interface.
    pub fn test_run_on(
        &self,
        program: &'static str,
        frame: &[u8],
        repeat: u32,
        ingress_ifindex: Option<u32>,
    ) -> Result<TestRunOutcome, Error> {
        // Room for programs that grow the frame (encapsulation) in later versions.
        let mut data_out = vec![0u8; frame.len() + 256];
        // `struct xdp_md`: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex; the kernel wants data 0, data_end the frame's length, no metadata.
        let xdp_md: Option<Vec<u8>> = ingress_ifindex.map(|ifindex| {
            [0, frame.len() as u32, 0, ifindex, 0, 0]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect()
        });
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ctx_in: xdp_md.as_deref(),
            repeat: repeat.max(1),
            ..Default::default()
        };
        let prog = self
            .ebpf
            .program(program)
            .ok_or(Error::MissingProgram { name: program })?;
        let result = match prog {
            aya::programs::Program::Xdp(p) => p.test_run(opts),
            aya::programs::Program::SchedClassifier(p) => p.test_run(opts),
            _ => return Err(Error::MissingProgram { name: program }),
        }
        .map_err(|e| program_error(program, e))?;
        data_out.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            return_value: result.return_value,
            data_out,
            duration: result.duration,
        })
    }
}

/// Pins an XDP link at `pin`.
fn pin_link(
    link: XdpLink,
    pin: &Path,
    name: &'static str,
    interface: &str,
) -> Result<PinnedLink, Error> {
    let pin_error = |e: String| Error::Io {
        what: "pinning the XDP link",
        path: pin.to_path_buf(),
        source: std::io::Error::other(format!("{name} on {interface}: {e}")),
    };
    FdLink::try_from(link)
        .map_err(|e| pin_error(e.to_string()))?
        .pin(pin)
        .map_err(|e| pin_error(e.to_string()))
}

/// How many times a program load that the kernel answers EAGAIN is tried, as libbpf does.
const LOAD_ATTEMPTS: u32 = 5;

/// Runs `load` until it succeeds, fails otherwise than EAGAIN, or has been tried
/// [`LOAD_ATTEMPTS`] times. The verifier gives up with EAGAIN when a signal is pending in the
/// loading thread (`do_check`), which says nothing about the program; a failed load leaves the
/// program unloaded, so trying again is safe.
fn load_retrying(
    name: &'static str,
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), Error> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(nix::errno::Errno::EAGAIN as i32)
                    && attempt < LOAD_ATTEMPTS =>
            {
                attempt += 1;
            }
            result => return result.map_err(|e| program_error(name, e)),
        }
    }
}

fn attach_error(program: &'static str, interface: &str, e: aya::programs::ProgramError) -> Error {
    Error::Attach {
        program,
        interface: interface.to_string(),
        source: Box::new(e),
    }
}
