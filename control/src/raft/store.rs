pub struct LogStore;
pub struct StateMachineStore;
