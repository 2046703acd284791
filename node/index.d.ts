// Types of motia-state-sql (hand-written; index.js is the implementation).
// Structurally compatible with Motia 0.17's StateAdapter (@motiadev/core), so
// `adapters: { state: new SqlStateAdapter() }` type-checks without importing Motia here.

export declare const DEFAULT_URL: 'sqlite:///.motia/motia.state.db'

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }

/**
 * What reads return. As `JsonValue`, except that an integer no JS number equals (Python wrote
 * 2 ** 53 + 1) comes back as an exact `bigint`; `set` refuses a `bigint`, so convert it first.
 * `-0` is kept. Integers JS wrote beyond 64 bits (1e19) are the same Number back.
 */
export type StoredValue = string | number | bigint | boolean | null | StoredValue[] | { [key: string]: StoredValue }

export interface SqlStateAdapterOptions {
  /** Any URL motia_state_sql's open_state takes; default $MOTIA_STATE_URL, else sqlite:///.motia/motia.state.db (relative to cwd). */
  url?: string
  /** The Python with motia_state_sql installed; default $MOTIA_STATE_PYTHON, else <cwd>/python_modules/bin/python when it exists, else python3. */
  python?: string
  /** Working directory of the Python process (relative sqlite:/// paths resolve here); default process.cwd(). */
  cwd?: string
  /** Extra environment variables for the Python process. */
  env?: Record<string, string>
  /** Milliseconds a call may wait for its answer before rejecting with StoreUnavailableError; 0 = no limit. Default 60000. */
  timeout?: number
  /** Milliseconds the Python process may take to open the store; default 60000. */
  startTimeout?: number
  /** Where the start line goes ("motia-state-sql: state in ..."); false for nowhere. Default console.log. */
  log?: ((line: string) => void) | false
  /** Start the Python process at the first call instead of at construction. Default false. */
  lazy?: boolean
}

export interface StateFilter {
  valueKey: string
  operation:
    | 'eq'
    | 'neq'
    | 'gt'
    | 'gte'
    | 'lt'
    | 'lte'
    | 'contains'
    | 'notContains'
    | 'startsWith'
    | 'endsWith'
    | 'isNotNull'
    | 'isNull'
  value?: string
}

export interface StateItemsInput {
  groupId?: string
  filter?: StateFilter[]
}

export interface StateItem {
  groupId: string
  key: string
  type: 'string' | 'number' | 'boolean' | 'object' | 'array' | 'null'
  value: string | number | bigint | boolean | object | unknown[] | null
}

/** An item with its metadata. Versions are decimal strings: they exceed 2^53. Times are ms since the epoch. */
export interface ItemWithMeta<T = unknown> {
  groupId: string
  key: string
  value: T
  version: string | null
  createdAt: number | null
  updatedAt: number | null
  expiresAt: number | null
}

export interface SetOptions {
  /** Seconds until the item expires. */
  ttl?: number
  /** Write only if the item is at this version: the decimal string getItem gave (a number beyond 2^53 is refused). */
  ifVersion?: string
  /** Write only if the key is absent. */
  ifAbsent?: boolean
}

export interface ConditionOptions {
  ifVersion?: string
  ifAbsent?: boolean
}

export type UpdateOp =
  | { type: 'set'; path: string; value: unknown }
  | { type: 'merge'; path?: string; value: Record<string, unknown> }
  | { type: 'increment'; path: string; by: number }
  | { type: 'decrement'; path: string; by: number }
  | { type: 'remove'; path: string }

export interface UpdateResult<T = unknown> {
  oldValue: T | null
  newValue: T
}

export interface StateOperations {
  get<T>(groupId: string, key: string): Promise<T | null>
  /**
   * Stores the value as JSON.stringify writes it (Dates as ISO text, undefined fields dropped,
   * undefined array entries null) and returns it as stored. NaN, Infinity, an Invalid Date, a
   * bigint, a lone surrogate and a top-level undefined reject with InvalidValueError; -0 is kept.
   */
  set<T>(groupId: string, key: string, value: T, options?: SetOptions): Promise<T>
  delete<T>(groupId: string, key: string, options?: ConditionOptions): Promise<T | null>
  update<T>(groupId: string, key: string, ops: UpdateOp[], options?: ConditionOptions): Promise<UpdateResult<T>>
  getItem<T>(groupId: string, key: string): Promise<ItemWithMeta<T> | null>
  getGroup<T>(groupId: string): Promise<T[]>
  clear(groupId: string): Promise<void>
  keys(groupId: string): Promise<string[]>
  traceIds(): Promise<string[]>
  items(input: StateItemsInput): Promise<StateItem[]>
}

export declare class SqlStateTransaction implements StateOperations {
  get<T>(groupId: string, key: string): Promise<T | null>
  set<T>(groupId: string, key: string, value: T, options?: SetOptions): Promise<T>
  delete<T>(groupId: string, key: string, options?: ConditionOptions): Promise<T | null>
  update<T>(groupId: string, key: string, ops: UpdateOp[], options?: ConditionOptions): Promise<UpdateResult<T>>
  getItem<T>(groupId: string, key: string): Promise<ItemWithMeta<T> | null>
  getGroup<T>(groupId: string): Promise<T[]>
  clear(groupId: string): Promise<void>
  keys(groupId: string): Promise<string[]>
  traceIds(): Promise<string[]>
  items(input: StateItemsInput): Promise<StateItem[]>
}

export declare class SqlStateAdapter implements StateOperations {
  constructor(options?: SqlStateAdapterOptions)
  readonly options: Required<Omit<SqlStateAdapterOptions, 'lazy'>>
  /** The pid of the Python process serving this adapter, or null when none runs. */
  readonly pid: number | null
  get<T>(groupId: string, key: string): Promise<T | null>
  set<T>(groupId: string, key: string, value: T, options?: SetOptions): Promise<T>
  delete<T>(groupId: string, key: string, options?: ConditionOptions): Promise<T | null>
  update<T>(groupId: string, key: string, ops: UpdateOp[], options?: ConditionOptions): Promise<UpdateResult<T>>
  getItem<T>(groupId: string, key: string): Promise<ItemWithMeta<T> | null>
  getGroup<T>(groupId: string): Promise<T[]>
  clear(groupId: string): Promise<void>
  keys(groupId: string): Promise<string[]>
  traceIds(): Promise<string[]>
  items(input: StateItemsInput): Promise<StateItem[]>
  /** All-or-nothing; `work` may run again (up to `attempts`) after a ConflictError at commit (Redis). */
  transaction<R>(work: (tx: SqlStateTransaction) => Promise<R>, options?: { attempts?: number }): Promise<R>
  /** Closes the store; the Python process exits. Motia never calls it: on exit the process sees EOF and closes. */
  cleanup(): Promise<void>
}

export declare class StateError extends Error {}
export declare class InvalidKeyError extends StateError {}
export declare class ConfigError extends StateError {}
export declare class InvalidValueError extends StateError {}
export declare class InvalidOperationError extends StateError {}
export declare class ConflictError extends StateError {}
export declare class SchemaError extends StateError {}
export declare class StoreUnavailableError extends StateError {}
export declare class UnsupportedError extends StateError {}

export default SqlStateAdapter
