// Motia's state lives in motia-state-sql: a SQLite file in WAL mode, kept by one Python process.
// The URL is relative to this folder (Motia's working directory); any motia_state_sql URL works
// here (sqlite:////absolute/path, redis://..., memory://).
//
// If this file fails to load, Motia only prints a warning and keeps its state in Redis: look for
// the line "motia-state-sql: state in sqlite:///..." when Motia starts.
import { config } from 'motia'
import { SqlStateAdapter } from 'motia-state-sql'

export default config({
  adapters: {
    state: new SqlStateAdapter({ url: 'sqlite:///.motia/motia.state.db' }),
  },
})
