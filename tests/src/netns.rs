//! Test hosts in Linux network namespaces: each node gets its own namespace and IP on a
//! bridge, so nodes reach each other by real addresses, and links can be cut. The bridge
//! lives in a namespace of its own: nothing here touches the machine's own network.
//! Needs root (and iproute2); everything is removed on drop.

use std::process::Command;

use crate::harness::Node;

/// A private network of test hosts on `10.213.<subnet>.0/24`.
pub struct Net {
    prefix: String,
    subnet: u8,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Net {
    /// Why namespaces cannot be made here, if they cannot.
    pub fn unavailable() -> Option<String> {
        let probe = format!("mrpc-probe-{}", std::process::id());
        match ip(&["netns", "add", &probe]) {
            Ok(()) => {
                let _ = ip(&["netns", "del", &probe]);
                None
            }
            Err(e) => Some(e),
        }
    }

    /// A switch (a bridge in its own namespace) for subnet `10.213.<subnet>.0/24`.
    pub fn new(subnet: u8) -> Net {
        let prefix = format!("mr{}s{subnet}", std::process::id() % 100_000);
        let net = Net { prefix, subnet, hosts: Vec::new() };
        let sw = net.switch();
        ip(&["netns", "add", &sw]).unwrap();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]).unwrap();
        ip(&["-n", &sw, "link", "set", "br0", "up"]).unwrap();
        net
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Adds host `n` (1…254) with address `10.213.<subnet>.<n>`; returns that address.
    pub fn host(&mut self, n: u8) -> String {
        let ns = self.ns(n);
        let sw = self.switch();
        let port = format!("p{n}");
        ip(&["netns", "add", &ns]).unwrap();
        ip(&["-n", &ns, "link", "set", "lo", "up"]).unwrap();
        ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &sw]).unwrap();
        let addr = format!("10.213.{}.{n}", self.subnet);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]).unwrap();
        ip(&["-n", &ns, "link", "set", "eth0", "up"]).unwrap();
        ip(&["-n", &sw, "link", "set", &port, "master", "br0"]).unwrap();
        ip(&["-n", &sw, "link", "set", &port, "up"]).unwrap();
        self.hosts.push(ns);
        addr
    }

    /// Gives every host a permanent neighbour entry for every other (no ARP). On this
    /// software switch an ARP request is copied to every port, and a node that learns a
    /// mesh of 32 at once asks for 32 addresses at once: 32 × 66 copies overflow the
    /// kernel's per-CPU backlog (`netdev_max_backlog`, 1,000) on a loaded 2-core machine,
    /// requests are lost, and the datagrams waiting on them are dropped (`SndbufErrors`)
    /// until the next try, often lost the same way. A LAN's switch copies broadcasts in
    /// hardware; with many hosts, call this once they are all added.
    pub fn static_neighbors(&self) {
        let macs: Vec<(String, String)> = self
            .hosts
            .iter()
            .map(|ns| {
                let out = Command::new("ip").args(["-n", ns, "-j", "addr", "show", "eth0"]).output().expect("ip addr");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
                let mac = v[0]["address"].as_str().expect("a MAC").to_owned();
                let ip = v[0]["addr_info"][0]["local"].as_str().expect("an address").to_owned();
                (ip, mac)
            })
            .collect();
        for ns in &self.hosts {
            let batch: String = macs
                .iter()
                .map(|(ip, mac)| format!("neigh replace {ip} lladdr {mac} dev eth0 nud permanent\n"))
                .collect();
            let mut child = Command::new("ip")
                .args(["-n", ns, "-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("ip -batch");
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(batch.as_bytes()).expect("batch written");
            child.wait().expect("ip -batch ran");
        }
    }

    /// Runs `bin args…` on host `n` and waits for its `listening on` line.
    pub async fn start(&self, n: u8, bin: &str, args: &[&str]) -> Node {
        let ns = self.ns(n);
        let mut full = vec!["netns", "exec", ns.as_str(), bin];
        full.extend_from_slice(args);
        Node::start("ip", &full).await
    }

    /// The command line that runs `bin` on host `n` (for callers started by hand).
    pub fn exec_args<'a>(&'a self, n: u8, bin: &'a str) -> (String, Vec<String>) {
        ("ip".into(), vec!["netns".into(), "exec".into(), self.ns(n), bin.into()])
    }

    /// Bytes and packets host `n`'s interface received and sent so far:
    /// `(rx bytes, tx bytes, rx packets, tx packets)`, headers included.
    pub fn traffic(&self, n: u8) -> (u64, u64, u64, u64) {
        let out = Command::new("ip")
            .args(["-n", &self.ns(n), "-s", "-j", "link", "show", "eth0"])
            .output()
            .expect("ip -s link");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
        let stats = &v[0]["stats64"];
        let get = |dir: &str, what: &str| stats[dir][what].as_u64().unwrap_or(0);
        (get("rx", "bytes"), get("tx", "bytes"), get("rx", "packets"), get("tx", "packets"))
    }

    /// TCP connections established on host `n` (either end).
    pub fn established(&self, n: u8) -> usize {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(n), "ss", "-tnH", "state", "established"])
            .output()
            .expect("ss");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// Host `n`'s `/etc/hosts` (what `ip netns exec` shows its processes): the file is
    /// rewritten in place, so a running process sees the change at its next look-up.
    pub fn hosts_file(&self, n: u8, contents: &str) {
        let dir = format!("/etc/netns/{}", self.ns(n));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/hosts"), contents).unwrap();
    }

    fn ns(&self, n: u8) -> String {
        format!("{}-h{n}", self.prefix)
    }

    /// Cuts host `n` off the network (its switch port goes down), or heals it.
    pub fn link(&self, n: u8, up: bool) {
        ip(&["-n", &self.switch(), "link", "set", &format!("p{n}"), if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch())) {
            // Processes still inside die with their namespace's last reference anyway;
            // make sure none lingers.
            let _ = Command::new("ip").args(["netns", "pids", ns]).output().map(|out| {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
            let _ = ip(&["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
    }
}
