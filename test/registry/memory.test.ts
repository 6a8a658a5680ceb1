import t from 'tap'
import { MemoryRegistry } from '../../src/registry/memory.js'
import { runRegistryContract } from './contract.js'

runRegistryContract(t, 'memory', async () => new MemoryRegistry())
