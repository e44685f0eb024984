//! Integration tests: the `claw-provision` binary against real OpenSSH servers on light lab hosts
//! (tests/lab/lab.sh), plus offline CLI checks. One binary, one file per feature.

mod support;
mod tree;

mod accounts;
mod adhoc;
mod apply_lock;
mod apt;
mod become_user;
mod cert;
mod claw_ai;
mod claw_ai_e2e;
mod claw_ai_light;
mod cli_errors;
mod cli_polish;
mod compose_up;
mod confirm;
mod connect;
mod converge;
mod converge_fuzz;
mod cuts;
mod docker_host;
mod facts_cmd;
mod facts_secrets;
mod faults;
mod firewall;
mod fleet_keys;
mod full_lab;
mod git;
mod hostile;
mod http_check;
mod image_ship;
mod jump;
mod known_hosts_files;
mod no_injection;
mod rollout;
mod saved_plan;
mod secret_leaks;
mod selection;
mod ssh_config;
mod static_binary;
mod stats;
mod tasks;
