//! The driver for a [`Simulator`]: the agent relays to the simulator's loopback server
//! like to any runtime; this driver gives its probe and, for `bench`, its generations.

use std::sync::Arc;

use super::{ChatRequest, CompletionRequest, DriverError, EmbedRequest, EventStream, RuntimeDriver, RuntimeProbe};
use crate::config::RuntimeKind;
use crate::simulator::{Simulator, server};

#[derive(Debug)]
pub struct SimulatedDriver {
    simulator: Arc<Simulator>,
    base_url: String,
}

impl SimulatedDriver {
    /// Start `simulator`'s server on loopback and drive it.
    pub async fn start(simulator: Simulator) -> std::io::Result<Self> {
        let simulator = Arc::new(simulator);
        let address = server::start(simulator.clone()).await?;
        Ok(Self {
            simulator,
            base_url: format!("http://{address}"),
        })
    }
}

#[async_trait::async_trait]
impl RuntimeDriver for SimulatedDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Simulated
    }

    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    async fn models(&self) -> Result<Vec<String>, DriverError> {
        Ok(self.simulator.models().to_vec())
    }

    async fn chat(&self, request: ChatRequest) -> Result<EventStream, DriverError> {
        self.simulator.chat(&request)
    }

    async fn complete(&self, request: CompletionRequest) -> Result<EventStream, DriverError> {
        self.simulator
            .generate(&request.model, &request.prompt, &request.sampling)
    }

    async fn embed(&self, request: EmbedRequest) -> Result<Vec<Vec<f32>>, DriverError> {
        self.simulator.embed(&request.model, &request.input)
    }

    async fn probe(&self) -> RuntimeProbe {
        self.simulator.probe()
    }
}
