mod net;
mod nodes;
