//! The run's locks between its own jobs (the server-side board and hub locks guard against
//! other runs): per hub port, so that a power cycle never cuts another job's flash; per
//! ST-LINK probe behind the hub's multiplexer, so that its boards are flashed one at a time
//! while every other board keeps its parallelism.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::plan::Job;
use crate::config::{Device, Interface, PowerPort, Server};

/// A board of the run: what has to be listed again after its port was power-cycled.
#[derive(Debug, Clone)]
pub struct PortBoard {
    pub serial: String,
    pub interface: Interface,
}

/// Read/write locks per hub port of the run's boards: a flash attempt holds its port's read
/// lock, a power cycle the write lock, so a power cycle waits for every other flash on that
/// port and no flash starts on it while it is off.
#[derive(Debug)]
pub struct PortLocks {
    ports: HashMap<PowerPort, (RwLock<()>, Vec<PortBoard>)>,
    server: Server,
}

impl PortLocks {
    /// Locks for the power ports (on `server`'s backend) of these jobs.
    pub fn new(jobs: &[Job], server: &Server) -> Self {
        let mut ports: HashMap<PowerPort, (RwLock<()>, Vec<PortBoard>)> = HashMap::new();
        for job in jobs {
            if let Some(port) = job.device.power_port(server) {
                ports.entry(port).or_default().1.push(PortBoard {
                    serial: job.device.serial.clone(),
                    interface: job.device.interface(),
                });
            }
        }
        PortLocks {
            ports,
            server: server.clone(),
        }
    }

    /// Shared hold on the power port of `device` (none for a board without one).
    pub fn flashing(&self, device: &Device) -> Option<RwLockReadGuard<'_, ()>> {
        let (lock, _) = self.ports.get(&device.power_port(&self.server)?)?;
        Some(lock.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sole hold on `port`: every other flash on it has ended, and none starts.
    pub fn exclusive(&self, port: &PowerPort) -> Option<RwLockWriteGuard<'_, ()>> {
        let (lock, _) = self.ports.get(port)?;
        Some(lock.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// The boards of the run on `port`.
    pub fn boards(&self, port: &PowerPort) -> Vec<PortBoard> {
        self.ports
            .get(port)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

/// One lock per ST-LINK probe that reaches several boards through the hub's multiplexer: the
/// probe talks to one board at a time, so a job holds its probe's lock from switching the mux
/// to the end of the programmer run.
#[derive(Debug, Default)]
pub struct ProbeLocks {
    probes: HashMap<String, Mutex<()>>,
}

impl ProbeLocks {
    /// Locks for the multiplexed probes of these jobs.
    pub fn new(jobs: &[Job]) -> Self {
        let probes = jobs
            .iter()
            .filter(|j| j.device.stlink_mux.is_some())
            .map(|j| (j.device.serial.to_ascii_uppercase(), Mutex::new(())))
            .collect();
        ProbeLocks { probes }
    }

    /// Sole use of the probe of `device` (none for a board that is not behind the mux).
    pub fn using(&self, device: &Device) -> Option<MutexGuard<'_, ()>> {
        device.stlink_mux?;
        let lock = self.probes.get(&device.serial.to_ascii_uppercase())?;
        Some(lock.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
