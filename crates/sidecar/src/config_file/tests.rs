use super::*;
use crate::policy::Proto;

fn parse_str(text: &str) -> Result<SidecarConfig, ConfigError> {
    parse(text, Path::new("test.toml"))
}

fn refused(text: &str) -> (usize, String) {
    match parse_str(text) {
        Err(ConfigError::Invalid { line, reason, .. }) => (line, reason),
        Err(e) => panic!("not an Invalid error: {e}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

#[test]
fn the_commented_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sidecar.example.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.vms.contains_key("web"));
    assert!(config.vms.contains_key("jobs"));
    let published: Vec<_> = config.publications().collect();
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.contains(&("127.0.0.1:8053".parse().unwrap(), Proto::Udp, "web", 53)));
    let dest = "10.1.2.3:443".parse().unwrap();
    assert!(config.allowing("web", dest, Proto::Tcp).is_some());
    assert!(config.allowing("jobs", dest, Proto::Tcp).is_none());
    let unix: Vec<String> = config.policy.unix.iter().map(|r| r.to_string()).collect();
    assert_eq!(unix, ["unix:/var/run/postgresql/"]);
    let web_unix = &config.vms["web"].allow_unix;
    assert_eq!(web_unix.len(), 1);
    assert_eq!(web_unix[0].to_string(), "unix:/run/web/cache.sock");
    assert!(config.vms["jobs"].allow_unix.is_empty());
    let (web, jobs) = (config.limits_for("web"), config.limits_for("jobs"));
    assert_eq!(web.pending_connections_per_vm, 1024);
    assert_eq!(jobs.pending_connections_per_vm, 4096);
    assert_eq!(web.listeners_per_vm, jobs.listeners_per_vm);
}

#[test]
fn vms_rules_and_limits_are_read() {
    let config = parse_str(
        r#"
max_frame = 1048576
allow = ["127.0.0.1:5432"]
[limits]
sockets_per_vm = 100
pairing_wait_ms = 0
[[vm]]
name = "a"
secret = "sa"
allow = ["udp:10.0.0.53:53"]
[[vm]]
name = "b"
secret = "sb"
"#,
    )
    .unwrap();
    assert_eq!(config.limits.max_frame, 1 << 20);
    assert_eq!(config.limits.sockets_per_vm, 100);
    assert_eq!(config.limits.pairing_wait, Duration::ZERO);
    assert_eq!(
        config.limits.write_hard_limit,
        Limits::default().write_hard_limit
    );
    assert!(config.secret_matches("a", "sa") && config.secret_matches("b", "sb"));
    let db = "127.0.0.1:5432".parse().unwrap();
    let dns = "10.0.0.53:53".parse().unwrap();
    assert!(config.allowing("a", db, Proto::Tcp).is_some());
    assert!(config.allowing("b", db, Proto::Tcp).is_some());
    assert!(config.allowing("a", dns, Proto::Udp).is_some());
    assert!(config.allowing("a", dns, Proto::Tcp).is_none());
    assert!(config.allowing("b", dns, Proto::Udp).is_none());
}

#[test]
fn the_hello_gate_limits_are_read_and_sessions_per_vm_is_per_vm() {
    let text = "[limits]\nhello_timeout_ms = 300\nunattached_connections = 7\n\
                hello_max_frame = 4096\nrefused_hello_delay_ms = 0\nmax_credit = 65536\n\
                max_header = 1024\nsessions_per_vm = 9\n\
                [[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nsessions_per_vm = 2\n";
    let config = parse_str(text).unwrap();
    let limits = &config.limits;
    assert_eq!(limits.hello_timeout, Duration::from_millis(300));
    assert_eq!(limits.unattached_connections, 7);
    assert_eq!(limits.hello_max_frame, 4096);
    assert_eq!(limits.refused_hello_delay, Duration::ZERO);
    assert_eq!((limits.max_credit, limits.max_header), (65536, 1024));
    assert_eq!(limits.sessions_per_vm, 9);
    assert_eq!(config.limits_for("a").sessions_per_vm, 2);
    let (_, reason) =
        refused("[[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nmax_header = 9\n");
    assert!(reason.contains("max_header is sidecar-wide"), "{reason}");
}

#[test]
fn outbound_and_vm_buffer_limits_are_read_and_bytes_per_turn_is_sidecar_wide() {
    let config = parse_str(
        "[limits]\nbytes_per_turn = 4096\nsession_outbound_bytes = 1000\n\
         [[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nbuffered_bytes_per_vm = 5000\n",
    )
    .unwrap();
    assert_eq!(config.limits.bytes_per_turn, 4096);
    let a = config.limits_for("a");
    assert_eq!(
        (a.session_outbound_bytes, a.buffered_bytes_per_vm),
        (1000, 5000)
    );
    let (line, reason) =
        refused("[[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nbytes_per_turn = 1\n");
    assert_eq!(line, 4, "{reason}");
    assert!(reason.contains("sidecar-wide"), "{reason}");
}

#[test]
fn bad_files_are_refused_with_the_line_and_the_reason() {
    let (line, reason) =
        refused("[[vm]]\nname = \"a\"\nsecret = \"s\"\nallow = [\"10.0.0.0/33\"]\n");
    assert_eq!(line, 4, "{reason}");
    assert!(reason.contains("longer than the address"), "{reason}");

    let (line, reason) = refused("\n\nmax_frames = 3\n");
    assert_eq!(line, 3, "{reason}");
    assert!(reason.contains("max_frames"), "{reason}");

    let (line, reason) = refused("[[vm]]\nname = \"a\"\n");
    assert_eq!(line, 1, "{reason}");
    assert!(reason.contains("exactly one of secret"), "{reason}");

    let twice = "[[vm]]\nname = \"a\"\nsecret = \"x\"\n\n[[vm]]\nname = \"a\"\nsecret = \"y\"\n";
    let (line, reason) = refused(twice);
    assert_eq!(line, 5, "{reason}");
    assert!(reason.contains("defined twice"), "{reason}");

    let (_, reason) = refused("[[vm]]\nname = \"a\"\nsecret_file = \"/nonexistent/secret\"\n");
    assert!(reason.contains("/nonexistent/secret"), "{reason}");

    let (line, _) = refused("allow = [\n  \"127.0.0.1\",\n  \"nope\",\n]\n");
    assert_eq!(line, 3);

    let publish =
        "[[vm]]\nname = \"a\"\nsecret = \"s\"\n[[vm.publish]]\nhost = \"8080\"\nport = 80\n";
    let (line, reason) = refused(publish);
    assert_eq!(line, 4, "{reason}");
    assert!(reason.contains("not ADDR:PORT"), "{reason}");

    let (_, reason) = refused("[limits]\nwrite_high_water = 10\nwrite_hard_limit = 5\n");
    assert!(reason.contains("write_high_water"), "{reason}");

    // fd_reserve: read in [limits], refused in [vm.limits] (sidecar-wide).
    let config = parse_str("[limits]\nfd_reserve = 100\n").unwrap();
    assert_eq!(config.limits.fd_reserve, 100);
    let own = "[[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nfd_reserve = 10\n";
    let (_, reason) = refused(own);
    assert!(reason.contains("fd_reserve is sidecar-wide"), "{reason}");
}

#[test]
fn a_vm_may_override_limits() {
    let config = parse_str(
        r#"
[limits]
sockets_per_vm = 100
pending_connections_per_vm = 50
[[vm]]
name = "a"
secret = "sa"
[vm.limits]
sockets_per_vm = 10
write_hard_limit = 1000
write_high_water = 500
[[vm]]
name = "b"
secret = "sb"
"#,
    )
    .unwrap();
    let (a, b) = (config.limits_for("a"), config.limits_for("b"));
    assert_eq!((a.sockets_per_vm, b.sockets_per_vm), (10, 100));
    assert_eq!(a.pending_connections_per_vm, 50, "the global value");
    assert_eq!((a.write_hard_limit, a.write_high_water), (1000, 500));
    assert_eq!(b, config.limits);
}

#[test]
fn dns_limits_are_read_and_the_sidecar_wide_ones_stay_global() {
    let text = "[limits]\ndns_threads = 2\ndns_timeout_ms = 250\ndns_lookups_per_vm = 3\n\
                [[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\ndns_lookups_per_vm = 1\n";
    let config = parse_str(text).unwrap();
    assert_eq!(config.limits.dns_threads, 2);
    assert_eq!(config.limits.dns_timeout, Duration::from_millis(250));
    assert_eq!(config.limits.dns_lookups_per_vm, 3);
    assert_eq!(config.limits_for("a").dns_lookups_per_vm, 1);
    let own = "[[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\ndns_threads = 9\n";
    let (line, reason) = refused(own);
    assert_eq!(line, 4, "{reason}");
    assert!(reason.contains("sidecar-wide"), "{reason}");
    let (_, reason) = refused("[limits]\ndns_threads = 0\n");
    assert!(
        reason.contains("dns_threads must be at least 1"),
        "{reason}"
    );
}

#[test]
fn bad_vm_limits_are_refused_with_their_line() {
    let unknown = "[[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nsockets = 3\n";
    let (line, reason) = refused(unknown);
    assert_eq!(line, 5, "{reason}");
    assert!(reason.contains("sockets"), "{reason}");
    // A VM's hard limit under the global high-water mark cannot work.
    let clash = "[[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nwrite_hard_limit = 5\n";
    let (line, reason) = refused(clash);
    assert!((4..=5).contains(&line), "{line}: {reason}");
    assert!(
        reason.contains("VM a") && reason.contains("write_high_water"),
        "{reason}"
    );
    let (line, reason) =
        refused("[[vm]]\nname = \"a\"\nsecret = \"s\"\n[vm.limits]\nsockets_per_vm = -1\n");
    assert_eq!(line, 5, "{reason}");
}

#[test]
fn a_literal_secret_readable_by_others_is_warned_about() {
    let path = Path::new("/etc/sidecar.toml");
    let vms = ["a".to_owned(), "b".to_owned()];
    let warning = exposed_secrets_warning(path, 0o100644, &vms).expect("0644 warns");
    assert!(warning.contains("/etc/sidecar.toml"), "{warning}");
    assert!(warning.contains("VM a, b"), "{warning}");
    assert!(
        warning.contains("chmod 600") && warning.contains("secret_file"),
        "{warning}"
    );
    assert!(
        exposed_secrets_warning(path, 0o100640, &vms).is_some(),
        "group-readable"
    );
    assert!(
        exposed_secrets_warning(path, 0o100604, &vms).is_some(),
        "world-readable"
    );
    assert!(
        exposed_secrets_warning(path, 0o100610, &vms).is_some(),
        "any group bit"
    );
    assert_eq!(exposed_secrets_warning(path, 0o100600, &vms), None);
    assert_eq!(exposed_secrets_warning(path, 0o100400, &vms), None);
    assert_eq!(
        exposed_secrets_warning(path, 0o100644, &[]),
        None,
        "no literal secret"
    );
}

#[test]
fn only_literal_secrets_are_noted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.secret"), "from-file\n").unwrap();
    let path = dir.path().join("sidecar.toml");
    let text = "[[vm]]\nname = \"a\"\nsecret = \"sa\"\n\
                [[vm]]\nname = \"b\"\nsecret_file = \"b.secret\"\n";
    let (config, literal) = parse_noting_literal_secrets(text, &path).unwrap();
    assert_eq!(literal, ["a"]);
    assert!(config.secret_matches("b", "from-file"));
}

#[test]
fn a_secret_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.secret"), "from-file\nignored\n").unwrap();
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, "[[vm]]\nname = \"a\"\nsecret_file = \"a.secret\"\n").unwrap();
    let config = load(&path).unwrap();
    assert!(config.secret_matches("a", "from-file"));
    assert!(matches!(
        load(&dir.path().join("missing.toml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn a_bad_unix_rule_is_refused_at_its_line() {
    let (line, reason) = refused("max_frame = 65536\nallow = [\n  \"unix:relative.sock\",\n]\n");
    assert_eq!(line, 3, "{reason}");
    assert!(reason.contains("absolute"), "{reason}");
}
